"""The grid of cells in params.yaml, its validation, and the exact commands both orchestrators run.

Snakemake builds its shell commands here; dvc.yaml spells the same commands with DVC's templating
(`${item.arch}` unpacks a dict as `--key value` flags). `cli_flags` reproduces that unpacking so
the two front ends run byte-identical commands, which tests/test_pipeline.py checks.
`python -m align_mamba.pipeline check params.yaml` validates a params file without running anything.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align_mamba.core.cli import read_yaml
from align_mamba.core.params import from_mapping
from align_mamba.recall.config import ModelConfig, TrainConfig
from align_mamba.recall.mqar import MQARConfig
from align_mamba.core.errors import ConfigError, run_cli

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "params.schema.yaml"


def cli_flags(mapping: Mapping[str, Any]) -> str:
    """`{a: 1, b: [0, 2], c: []}` → `--a 1 --b 0 2`, exactly as DVC renders `${dict}` in a cmd."""
    parts = []
    for key, value in mapping.items():
        if isinstance(value, bool):
            parts += [f"--{key}"] if value else []
        elif isinstance(value, (list, tuple)):
            parts += [f"--{key}", *map(str, value)] if value else []
        else:
            parts += [f"--{key}", str(value)]
    return " ".join(parts)


@dataclass(frozen=True)
class Cell:
    """One grid point; `architecture` is the params.yaml entry (name, variant, hybrid_positions)."""

    architecture: Mapping[str, Any]
    num_pairs: int
    d_state: int
    seed: int

    @property
    def name(self) -> str:
        return self.architecture["name"]

    @property
    def stem(self) -> str:
        return f"np{self.num_pairs}-ds{self.d_state}-s{self.seed}"

    @property
    def run_dir(self) -> str:
        return f"runs/{self.name}/{self.stem}"

    @property
    def metrics(self) -> str:
        return f"results/cells/{self.name}/{self.stem}.json"


def data_dir(num_pairs: int) -> str:
    return f"data/mqar/np{num_pairs}"


def cells(params: Mapping[str, Any]) -> Iterator[Cell]:
    grid = params["grid"]
    for arch, num_pairs, d_state, seed in itertools.product(
            grid["architectures"], grid["num_pairs"], grid["d_state"], grid["seeds"]):
        yield Cell(arch, num_pairs, d_state, seed)


def data_command(params: Mapping[str, Any], num_pairs: int) -> str:
    return (f"python -m align_mamba.recall.data --out {data_dir(num_pairs)} --num_pairs {num_pairs} "
            f"{cli_flags(params['data'])} --log logs/mqar_data/np{num_pairs}.log")


def train_command(params: Mapping[str, Any], cell: Cell) -> str:
    # The architecture's flags come after train's: an entry's own `lr` overrides train.lr (the last flag wins).
    return (f"python -m align_mamba.recall.train --data {data_dir(cell.num_pairs)} --out {cell.run_dir} "
            f"--d_state {cell.d_state} --seed {cell.seed} {cli_flags(params['model'])} {cli_flags(params['train'])} "
            f"{cli_flags(params['run'])} {cli_flags(cell.architecture)} --log logs/train/{cell.name}/{cell.stem}.log")


def evaluate_command(params: Mapping[str, Any], cell: Cell) -> str:
    return (f"python -m align_mamba.recall.evaluate --checkpoint {cell.run_dir}/model.pt --data {data_dir(cell.num_pairs)} "
            f"--out {cell.metrics} {cli_flags(params['run'])} {cli_flags(params['evaluate'])} "
            f"--log logs/evaluate/{cell.name}/{cell.stem}.log")


BENCH_DIR = "results/bench"
SECRETS_DATA = "data/secrets"
SECRETS_RESULTS = "results/secrets"


def report_command(params: Mapping[str, Any]) -> str:
    return (f"python -m align_mamba.report --cells results/cells --params params.yaml --out results "
            f"{cli_flags(params['report'])} --bench {BENCH_DIR} --secrets {SECRETS_RESULTS} "
            f"--log logs/report/report.log")


def bench_command(params: Mapping[str, Any]) -> str:
    # The CLI reads the section itself: an empty list there (ladder_rungs: [] skips the ladder)
    # would vanish from unpacked flags and bring back the CLI's default.
    return f"python -m align_mamba.bench --out {BENCH_DIR} --params params.yaml --log logs/bench/bench.log"


def tagger_dir(name: str) -> str:
    return f"runs/secrets/{name}"


def secrets_data_command(params: Mapping[str, Any]) -> str:
    return (f"python -m align_mamba.secrets.data --out {SECRETS_DATA} {cli_flags(params['secrets']['data'])} "
            f"--log logs/secrets/data.log")


def secrets_train_command(params: Mapping[str, Any], tagger: Mapping[str, Any]) -> str:
    secrets = params["secrets"]
    return (f"python -m align_mamba.secrets.train --data {SECRETS_DATA} --out {tagger_dir(tagger['name'])} "
            f"{cli_flags(tagger)} {cli_flags(secrets['model'])} {cli_flags(secrets['train'])} "
            f"{cli_flags(secrets['tagger'])} {cli_flags(params['run'])} --log logs/secrets/train/{tagger['name']}.log")


def secrets_evaluate_command(params: Mapping[str, Any], tagger: Mapping[str, Any]) -> str:
    name = tagger["name"]
    return (f"python -m align_mamba.secrets.evaluate --data {SECRETS_DATA} --checkpoint {tagger_dir(name)}/model.pt "
            f"--out {SECRETS_RESULTS}/{name} {cli_flags(params['secrets']['evaluate'])} {cli_flags(params['run'])} "
            f"--log logs/secrets/evaluate/{name}.log")


def secrets_baselines_command(params: Mapping[str, Any]) -> str:
    secrets = params["secrets"]
    return (f"python -m align_mamba.secrets.baselines --data {SECRETS_DATA} --out {SECRETS_RESULTS}/baselines "
            f"{cli_flags(secrets['evaluate'])} {cli_flags(secrets['baselines'])} --log logs/secrets/baselines.log")


def scan_throughput_command(params: Mapping[str, Any]) -> str:
    secrets = params["secrets"]
    return (f"python -m align_mamba.secrets.throughput --checkpoint {tagger_dir(secrets['scan_tagger'])}/model.pt "
            f"--out {BENCH_DIR}/scan_throughput.csv {cli_flags(secrets['throughput'])} {cli_flags(params['run'])} "
            f"--log logs/bench/scan_throughput.log")


def _schema_error_line(params: Mapping[str, Any]) -> str | None:
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(params))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message}"


# Training settings an architecture entry may set for itself (a learning rate per architecture:
# pure Mamba and hybrids learn MQAR in different learning-rate windows).
ARCHITECTURE_TRAIN_KEYS = ("lr",)


def _check_typed(params: Mapping[str, Any]) -> None:
    """The package's own dataclasses over every combination the grid will build."""
    grid, data = params["grid"], params["data"]
    # JSON schema counts 1.0 as an integer; these values become paths and flags, so insist.
    for key, values in (("grid.seeds", grid["seeds"]), ("grid.num_pairs", grid["num_pairs"]),
                        ("grid.d_state", grid["d_state"]), ("evaluate.batch_size", [params["evaluate"]["batch_size"]])):
        floats = [v for v in values if not isinstance(v, int)]
        if floats:
            raise ConfigError(f"{key}: {floats[0]!r} must be written as an integer")
    train = from_mapping(TrainConfig, {**params["train"], **params["run"]}, "train")
    names = [arch["name"] for arch in grid["architectures"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"grid.architectures: names must be unique, got {names}")
    for arch in grid["architectures"]:
        model_keys = {key: value for key, value in arch.items() if key not in ARCHITECTURE_TRAIN_KEYS}
        for d_state in grid["d_state"]:
            try:
                from_mapping(ModelConfig, {**params["model"], **model_keys, "d_state": d_state}, "model")
            except ConfigError as err:
                raise ConfigError(f"grid.architectures[{arch['name']}] with d_state {d_state}: {err}") from None
    num_queries = None if data["num_queries"] == "all" else data["num_queries"]
    for num_pairs in grid["num_pairs"]:
        try:
            MQARConfig(num_pairs=num_pairs, seq_len=data["seq_len_per_pair"] * num_pairs, num_queries=num_queries,
                       filler=data["filler"], power_a=data["power_a"], train_size=data["train_size"],
                       val_size=data["val_size"], test_size=data["test_size"], seed=data["seed"])
        except ConfigError as err:
            raise ConfigError(f"grid.num_pairs {num_pairs} with data settings: {err}") from None
    if train.batch_size > data["train_size"]:
        raise ConfigError(f"train.batch_size ({train.batch_size}) exceeds data.train_size ({data['train_size']})")


def _check_secrets(secrets: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """The secret task's dataset, taggers and training settings, through their dataclasses."""
    from align_mamba.secrets.data import SecretDataConfig
    from align_mamba.secrets.tagger import TaggerConfig
    from align_mamba.secrets.train import TaggerTrainConfig

    data = {k: tuple(v) if isinstance(v, list) else v for k, v in secrets["data"].items()}
    try:
        SecretDataConfig(**data)
    except ConfigError as err:
        raise ConfigError(f"secrets.data: {err}") from None
    names = [tagger["name"] for tagger in secrets["taggers"]]
    if len(set(names)) != len(names) or "baselines" in names:
        raise ConfigError(f"secrets.taggers: names must be unique and not 'baselines' (the scanners' folder), "
                          f"got {names}")
    if secrets["scan_tagger"] not in names:
        raise ConfigError(f"secrets.scan_tagger: {secrets['scan_tagger']!r} is not one of secrets.taggers {names}")
    for tagger in secrets["taggers"]:
        fields = {k: v for k, v in tagger.items() if k != "name"}
        try:
            from_mapping(TaggerConfig, {**secrets["model"], **fields}, "model")
        except ConfigError as err:
            raise ConfigError(f"secrets.taggers[{tagger['name']}]: {err}") from None
    from_mapping(TrainConfig, {**secrets["train"], **run}, "secrets.train")
    from_mapping(TaggerTrainConfig, secrets["tagger"], "secrets.tagger")


def check_params(params: Any, source: str = "params.yaml") -> None:
    """Raise ConfigError with one line naming the key for the first problem in `params`."""
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    line = _schema_error_line(params)
    if line is not None:
        raise ConfigError(f"{source}: {line}")
    _check_typed(params)
    from align_mamba.bench.config import load_bench_config

    load_bench_config(params["bench"])
    _check_secrets(params["secrets"], params["run"])


def load_params(path: str | Path) -> dict:
    """Read and validate a params file (PyYAML, as Snakemake reads it)."""
    params = read_yaml(Path(path), "params file")
    check_params(params, str(path))
    return params


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0] != "check":
        raise ConfigError("usage: python -m align_mamba.pipeline check [PARAMS_YAML]")
    path = args[1] if len(args) == 2 else "params.yaml"
    params = load_params(path)
    print(f"{path}: valid, {sum(1 for _ in cells(params))} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
