"""params.yaml as one typed tree: each study's settings, validated once at this boundary.

The recall study (`recall.params`), the secret-span study (`secrets.settings`) and the benchmark
(`bench.config`) each own their sections; this module reads the file once (duplicate keys, YAML 1.1
number-strings and unknown sections rejected) and builds all three. Stages of one study load only
their own sections, so a change to another study's code or settings never reruns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align_mamba.bench.config import BenchConfig, load_bench_config
from align_mamba.core.errors import ConfigError
from align_mamba.core.params import read_yaml, require
from align_mamba.recall.params import SECTIONS as RECALL_SECTIONS
from align_mamba.recall.params import RecallParams, build_recall_params
from align_mamba.secrets.settings import SecretsSettings, load_secrets_settings

SECTIONS = (*RECALL_SECTIONS, "bench", "secrets")


@dataclass(frozen=True)
class Params:
    recall: RecallParams
    secrets: SecretsSettings
    bench: BenchConfig

    @property
    def source(self) -> str:
        return self.recall.source


def build_params(raw: Any, source: str = "params.yaml") -> Params:
    """Every section of a parsed params file, validated; the first problem is one ConfigError line."""
    require(isinstance(raw, Mapping), f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    require(not unknown, f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    missing = [name for name in ("bench", "secrets") if not isinstance(raw.get(name), Mapping)]
    require(not missing, f"{source}: section(s) {', '.join(missing)} missing or not a mapping")
    recall = build_recall_params(raw, source)
    try:
        return Params(
            recall=recall,
            secrets=load_secrets_settings(raw["secrets"], recall.run),
            bench=load_bench_config(raw["bench"]),
        )
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_params(path: str | Path) -> Params:
    """Read and validate a whole params file."""
    return build_params(read_yaml(Path(path)), str(path))
