"""The secret-span study's part of params.yaml (`secrets:`), typed and checked once.

Each stage of the study takes its settings from here when run with `--params`: the dataset
(`data`), one resolved `TaggerConfig` per `taggers` entry over the shared `model`, the optimisation
(`train`, `tagger`), the splits scored, the baselines, and the throughput files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align_mamba.core.errors import ConfigError
from align_mamba.core.params import RunSettings, from_mapping, read_yaml, require, require_choice
from align_mamba.core.train_config import TrainConfig
from align_mamba.secrets.data.config import SECRET_SPLITS, TEST_SPLITS, SecretDataConfig
from align_mamba.secrets.data.kinds import CARRIER_KINDS
from align_mamba.secrets.tagger import TaggerConfig

SECTION_KEYS = ("data", "taggers", "model", "train", "tagger", "evaluate", "baselines", "throughput", "scan_tagger")
TOOL_NAMES = ("detect-secrets", "credsweeper")
WEIGHT_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class EvaluateSettings:
    splits: tuple[str, ...] = TEST_SPLITS

    def __post_init__(self) -> None:
        for split in self.splits:
            require_choice("splits", split, SECRET_SPLITS)


@dataclass(frozen=True)
class BaselineSettings:
    tools: tuple[str, ...] = TOOL_NAMES

    def __post_init__(self) -> None:
        for tool in self.tools:
            require_choice("tools", tool, TOOL_NAMES)


@dataclass(frozen=True)
class ThroughputSettings:
    """Scan speed on generated files of `sizes_mb` (MB) and carrier `kinds`, tagger beside `tools`."""

    sizes_mb: tuple[float, ...] = (1.0,)
    kinds: tuple[str, ...] = ("python",)
    repeats: int = 3
    tools: tuple[str, ...] = TOOL_NAMES
    weights: str = "float32"

    def __post_init__(self) -> None:
        require(
            bool(self.sizes_mb) and all(size > 0 for size in self.sizes_mb),
            f"sizes_mb must be sizes > 0, got {list(self.sizes_mb)}",
        )
        for kind in self.kinds:
            require_choice("kinds", kind, CARRIER_KINDS)
        for tool in self.tools:
            require_choice("tools", tool, TOOL_NAMES)
        require(self.repeats >= 1, f"repeats must be >= 1, got {self.repeats}")
        require_choice("weights", self.weights, WEIGHT_DTYPES)


@dataclass(frozen=True)
class Tagger:
    """One `taggers` entry, resolved over the shared `model:` section."""

    name: str
    model: TaggerConfig


@dataclass(frozen=True)
class SecretsSettings:
    run: RunSettings
    data: SecretDataConfig
    taggers: tuple[Tagger, ...]
    train: Any  # TrainConfig: the optimisation loop's settings
    tagger: Any  # TaggerTrainConfig: crops, loss weight, saved inference settings
    evaluate: EvaluateSettings
    baselines: BaselineSettings
    throughput: ThroughputSettings
    scan_tagger: str

    def tagger_named(self, name: str) -> Tagger:
        for tagger in self.taggers:
            if tagger.name == name:
                return tagger
        raise ConfigError(f"unknown tagger {name!r}; secrets.taggers: {', '.join(t.name for t in self.taggers)}")


def _taggers(entries: Any, model: Mapping[str, Any]) -> tuple[Tagger, ...]:
    require(isinstance(entries, list) and entries, "secrets.taggers must be a non-empty list")
    taggers = []
    for index, entry in enumerate(entries):
        require(
            isinstance(entry, Mapping) and isinstance(entry.get("name"), str),
            f"secrets.taggers[{index}] must be a mapping with a name",
        )
        fields = {k: v for k, v in entry.items() if k != "name"}
        try:
            config = from_mapping(TaggerConfig, {**model, **fields}, "model")
        except ConfigError as err:
            raise ConfigError(f"secrets.taggers[{entry['name']}]: {err}") from None
        taggers.append(Tagger(entry["name"], config))
    names = [t.name for t in taggers]
    require(
        len(set(names)) == len(names) and "baselines" not in names,
        f"secrets.taggers: names must be unique and not 'baselines' (the scanners' folder), got {names}",
    )
    return tuple(taggers)


def load_secrets(path: Path) -> SecretsSettings:
    """The `secrets:` and `run:` sections of a params file (what each stage of this study reads)."""
    raw = read_yaml(path)
    require(
        isinstance(raw, Mapping) and isinstance(raw.get("secrets"), Mapping) and isinstance(raw.get("run"), Mapping),
        f"{path}: needs `run:` and `secrets:` sections",
    )
    try:
        return load_secrets_settings(raw["secrets"], from_mapping(RunSettings, raw["run"], "run"))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_secrets_settings(raw: Mapping[str, Any], run: RunSettings) -> SecretsSettings:
    """`secrets:` of params.yaml as a SecretsSettings; `run` supplies device and backend."""
    from align_mamba.secrets.train import TaggerTrainConfig

    unknown = sorted(set(raw) - set(SECTION_KEYS))
    require(not unknown, f"secrets: unknown key(s) {', '.join(unknown)}")
    missing = [key for key in SECTION_KEYS if key not in raw]
    require(not missing, f"secrets: missing key(s) {', '.join(missing)}")
    try:
        data = from_mapping(SecretDataConfig, raw["data"], "data")
    except ConfigError as err:
        raise ConfigError(f"secrets.{err}" if str(err).startswith("data.") else f"secrets.data: {err}") from None
    taggers = _taggers(raw["taggers"], raw["model"])
    names = [t.name for t in taggers]
    require(
        raw["scan_tagger"] in names,
        f"secrets.scan_tagger: {raw['scan_tagger']!r} is not one of secrets.taggers {names}",
    )
    train = from_mapping(TrainConfig, {**raw["train"], "device": run.device, "backend": run.backend}, "secrets.train")
    return SecretsSettings(
        run=run,
        data=data,
        taggers=taggers,
        train=train,
        tagger=from_mapping(TaggerTrainConfig, raw["tagger"], "secrets.tagger"),
        evaluate=from_mapping(EvaluateSettings, raw["evaluate"], "secrets.evaluate"),
        baselines=from_mapping(BaselineSettings, raw["baselines"], "secrets.baselines"),
        throughput=from_mapping(ThroughputSettings, raw["throughput"], "secrets.throughput"),
        scan_tagger=raw["scan_tagger"],
    )
