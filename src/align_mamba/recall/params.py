"""The recall study's params tree: its sections of params.yaml, validated once, resolved into cells.

`load_recall_params(path)` reads the study's sections (run, data, model, train, evaluate, report,
architectures, experiments) and returns a frozen `RecallParams`; bad values are one ConfigError line
naming the key. Below it nothing is a dict: stages look their `Cell` up by id.

A cell is one training run, fully resolved: the architecture entry laid over `model:`, the
experiment's own overrides over both, one num_pairs, d_state, learning rate and seed. The cells to
run are the union over experiments, deduplicated by their resolved settings, so a cell two
experiments share trains once. Its id, `ARCH/np128-ds64-lr0.001-s0`, gains a `-x<hash>` suffix only
when an experiment overrides a setting (e.g. 18 decoder layers), the hash of what differs.

Worked example (params.yaml excerpt)::

    architectures:
      - {name: mamba2, variant: mamba2, lrs: [1.0e-3, 1.0e-2]}
    experiments:
      cliff: {architectures: [mamba2], num_pairs: [16, 64], d_state: [16], seeds: [0], lrs: [3.0e-3]}

gives four cells: mamba2/np16-ds16-lr0.001-s0, mamba2/np16-ds16-lr0.01-s0, and the same at np64
(an architecture's own `lrs` replaces the experiment's: learning-rate windows are per architecture).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align_mamba.core.errors import ConfigError
from align_mamba.core.params import (
    RunSettings,
    check_mapping,
    from_mapping,
    read_yaml,
    require,
    require_choice,
    to_dict,
)
from align_mamba.recall.config import ModelConfig, TrainConfig
from align_mamba.recall.mqar import MQARConfig

# Seeds become wildcards and file names; NumPy and torch take any seed below 2**63, but a bound this
# wide keeps ids short and still leaves room for every sane sweep.
MAX_SEED = 2**31 - 1
SECTIONS = ("run", "data", "model", "train", "evaluate", "report", "architectures", "experiments")
# Settings an experiment may not override: they are the grid's own axes.
AXES = ("d_state", "lr", "seed")


@dataclass(frozen=True)
class DataSettings:
    """MQAR data shared by every cell; one dataset per num_pairs (see recall.mqar.MQARConfig)."""

    seq_len_per_pair: int = 4
    num_queries: int | str = "all"
    num_keys: int | None = None
    filler: str = "pad"
    power_a: float = 0.01
    train_size: int = 2000
    val_size: int = 200
    test_size: int = 400
    seed: int = 1234

    def __post_init__(self) -> None:
        require(self.seq_len_per_pair >= 1, f"seq_len_per_pair must be >= 1, got {self.seq_len_per_pair}")
        require(
            self.num_queries == "all" or isinstance(self.num_queries, int),
            f"num_queries must be an integer or 'all', got {self.num_queries!r}",
        )

    def mqar(self, num_pairs: int) -> MQARConfig:
        return MQARConfig(
            num_pairs=num_pairs,
            seq_len=self.seq_len_per_pair * num_pairs,
            num_queries=None if self.num_queries == "all" else self.num_queries,
            num_keys=self.num_keys,
            filler=self.filler,
            power_a=self.power_a,
            train_size=self.train_size,
            val_size=self.val_size,
            test_size=self.test_size,
            seed=self.seed,
        )


@dataclass(frozen=True)
class EvaluateSettings:
    batch_size: int = 256

    def __post_init__(self) -> None:
        require(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")


@dataclass(frozen=True)
class ReportSettings:
    """capacity_threshold: a seed succeeds at a num_pairs when its test accuracy reaches this."""

    capacity_threshold: float = 0.9
    bootstrap_samples: int = 2000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        require(
            0 < self.capacity_threshold <= 1, f"capacity_threshold must be in (0, 1], got {self.capacity_threshold}"
        )
        require(self.bootstrap_samples >= 100, f"bootstrap_samples must be >= 100, got {self.bootstrap_samples}")
        require(0.5 <= self.confidence < 1, f"confidence must be in [0.5, 1), got {self.confidence}")


Overrides = tuple[tuple[str, Any], ...]


def _overrides(cls: type, values: Any, where: str, forbidden: tuple[str, ...] = ()) -> Overrides:
    """A mapping of `cls` fields, checked by name and type, as sorted (key, value) pairs."""
    if values is None:
        return ()
    require(isinstance(values, Mapping), f"{where} must be a mapping of settings, got {values!r}")
    bad = sorted(set(values) & set(forbidden))
    require(not bad, f"{where}: {', '.join(bad)} is an axis of the grid, not an override")
    check_mapping(cls, values, where)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


@dataclass(frozen=True)
class Architecture:
    """One entry of `architectures:`. model: its own model settings over `model:` (e.g. a wider pure
    Mamba matched in parameters to a hybrid); lrs: its learning-rate sweep, replacing the experiment's."""

    name: str
    variant: str
    hybrid_positions: tuple[int, ...] = ()
    lrs: tuple[float, ...] = ()
    model: Overrides = ()


@dataclass(frozen=True)
class Expectation:
    """One row of an experiment's hypothesis table, as the design notes state it.

    kind accuracy: test accuracy of `architecture` at (num_pairs, d_state) lies in [low, high].
    kind capacity_ratio: capacity / d_state lies in [low, high] at every d_state ("capacity ≈ d_state").
    kind capacity_slope: the log-log slope of capacity against d_state lies in [low, high] ("O(d_state)").
    """

    kind: str
    architecture: str
    low: float
    high: float
    num_pairs: int | None = None
    d_state: int | None = None
    claim: str = ""

    def __post_init__(self) -> None:
        require_choice("kind", self.kind, ("accuracy", "capacity_ratio", "capacity_slope"))
        require(self.low <= self.high, f"low ({self.low}) must be <= high ({self.high})")
        if self.kind == "accuracy":
            require(
                self.num_pairs is not None and self.d_state is not None,
                "an accuracy expectation names its num_pairs and d_state",
            )


@dataclass(frozen=True)
class Experiment:
    """One entry of `experiments:`: which architectures at which num_pairs, d_state, seeds and rates,
    with its own model/train overrides and the hypothesis its report section tests.

    confirm: which failed cells train again at twice the steps before they count as failures:
    edge (those next to a success: the same row at another num_pairs or rate learned), all, or none.
    extra_seeds: (architecture, seeds) pairs, seeds run for that architecture on top of `seeds`
    (more seeds where the experiment measures a cliff, whose outcomes are bimodal).
    """

    name: str
    architectures: tuple[str, ...]
    num_pairs: tuple[int, ...]
    d_state: tuple[int, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    model: Overrides = ()
    train: Overrides = ()
    expect: tuple[Expectation, ...] = ()
    question: str = ""
    confirm: str = "edge"
    extra_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def seeds_of(self, architecture: str) -> tuple[int, ...]:
        """The seeds `architecture` runs in this experiment: `seeds`, then its extra seeds."""
        return self.seeds + dict(self.extra_seeds).get(architecture, ())


# A cell's 2x-budget rerun: its id is the cell's id plus CONFIRM_ID_SUFFIX (what the orchestrators and
# the schedule name), its file the cell's stem plus CONFIRM_FILE_SUFFIX, beside the cell's own file.
CONFIRM_ID_SUFFIX = ".confirm"
CONFIRM_FILE_SUFFIX = CONFIRM_ID_SUFFIX + ".json"


@dataclass(frozen=True)
class Cell:
    """One training run. `experiments`: every experiment whose grid contains it."""

    architecture: str
    num_pairs: int
    model: ModelConfig
    train: TrainConfig
    suffix: str
    experiments: tuple[str, ...]

    @property
    def stem(self) -> str:
        return f"np{self.num_pairs}-ds{self.model.d_state}-lr{self.train.lr:g}-s{self.train.seed}{self.suffix}"

    @property
    def id(self) -> str:
        return f"{self.architecture}/{self.stem}"

    @property
    def run_dir(self) -> str:
        return f"runs/{self.id}"

    @property
    def metrics(self) -> str:
        return f"results/cells/{self.id}.json"

    @property
    def data_dir(self) -> str:
        return data_dir(self.num_pairs)

    def confirm_modes(self, params: RecallParams) -> frozenset[str]:
        """The `confirm` modes of the experiments that contain this cell, "none" left out."""
        return frozenset(params.experiment(name).confirm for name in self.experiments) - {"none"}

    @property
    def confirm_metrics(self) -> str:
        return f"results/cells/{self.id}{CONFIRM_FILE_SUFFIX}"


def data_dir(num_pairs: int) -> str:
    return f"data/mqar/np{num_pairs}"


@dataclass(frozen=True)
class RecallParams:
    """The recall study's settings, typed, and the cells they resolve to."""

    run: RunSettings
    data: DataSettings
    model: Overrides
    train: Overrides
    evaluate: EvaluateSettings
    report: ReportSettings
    architectures: tuple[Architecture, ...]
    experiments: tuple[Experiment, ...]
    cells: tuple[Cell, ...]
    source: str = "params.yaml"

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise ConfigError(
            f"--cell {cell_id!r} is not a cell of {self.source} "
            f"(`python -m align_mamba.pipeline check {self.source}` lists them)"
        )

    @property
    def num_pairs(self) -> tuple[int, ...]:
        return tuple(sorted({cell.num_pairs for cell in self.cells}))

    def experiment(self, name: str) -> Experiment:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(e.name for e in self.experiments)}")


def _ints(values: Any, where: str, minimum: int, maximum: int | None = None) -> tuple[int, ...]:
    require(isinstance(values, list) and values, f"{where} must be a non-empty list of integers, got {values!r}")
    for value in values:
        require(
            isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} must be written as an integer"
        )
        require(
            value >= minimum and (maximum is None or value <= maximum),
            f"{where}: {value} is outside [{minimum}, {maximum if maximum is not None else 'inf'}]",
        )
    require(len(set(values)) == len(values), f"{where} repeats a value: {values}")
    return tuple(values)


def _rates(values: Any, where: str, allow_empty: bool = False) -> tuple[float, ...]:
    if allow_empty and values is None:
        return ()
    require(
        isinstance(values, list) and (values or allow_empty),
        f"{where} must be a non-empty list of learning rates, got {values!r}",
    )
    for value in values:
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            f"{where}: {value!r} is not a number (write floats as 1.0e-3: YAML 1.1 reads 1e-3 as a string)",
        )
        require(math.isfinite(value) and value > 0, f"{where}: {value!r} must be a finite rate > 0")
    require(len(set(values)) == len(values), f"{where} repeats a value: {values}")
    return tuple(float(v) for v in values)


def _architecture(entry: Any, index: int) -> Architecture:
    where = f"architectures[{index}]"
    require(isinstance(entry, Mapping), f"{where} must be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - {f.name for f in dataclasses.fields(Architecture)})
    require(not unknown, f"{where}: unknown key(s) {', '.join(unknown)}")
    require(isinstance(entry.get("name"), str) and entry["name"], f"{where}: name is required")
    where = f"architectures[{entry['name']}]"
    require(isinstance(entry.get("variant"), str), f"{where}: variant is required")
    positions = entry.get("hybrid_positions", [])
    require(
        isinstance(positions, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in positions),
        f"{where}.hybrid_positions must be a list of integers, got {positions!r}",
    )
    return Architecture(
        name=entry["name"],
        variant=entry["variant"],
        hybrid_positions=tuple(positions),
        lrs=_rates(entry.get("lrs"), f"{where}.lrs", allow_empty=True),
        model=_overrides(
            ModelConfig,
            entry.get("model"),
            f"{where}.model",
            forbidden=("d_state", "variant", "name", "hybrid_positions"),
        ),
    )


def _expectation(entry: Any, where: str) -> Expectation:
    require(isinstance(entry, Mapping), f"{where} must be a mapping, got {entry!r}")
    bounds = entry.get("range")
    require(
        isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds),
        f"{where}.range must be [low, high], got {bounds!r}",
    )
    rest = {k: v for k, v in entry.items() if k != "range"}
    return from_mapping(Expectation, {**rest, "low": float(bounds[0]), "high": float(bounds[1])}, where)


EXPERIMENT_KEYS = (
    "question",
    "architectures",
    "num_pairs",
    "d_state",
    "seeds",
    "lrs",
    "model",
    "train",
    "confirm",
    "extra_seeds",
    "expect",
)


def _experiment(name: str, entry: Any, architectures: Mapping[str, Architecture]) -> Experiment:
    where = f"experiments.{name}"
    require(isinstance(entry, Mapping), f"{where} must be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - set(EXPERIMENT_KEYS))
    require(not unknown, f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(EXPERIMENT_KEYS)}")
    names = entry.get("architectures")
    require(isinstance(names, list) and names, f"{where}.architectures must be a non-empty list of names")
    for arch in names:
        require(
            arch in architectures,
            f"{where}.architectures: unknown architecture {arch!r}; known: {', '.join(architectures)}",
        )
    expect = entry.get("expect") or []
    require(isinstance(expect, list), f"{where}.expect must be a list")
    rows = tuple(_expectation(row, f"{where}.expect[{i}]") for i, row in enumerate(expect))
    seeds = _ints(entry.get("seeds"), f"{where}.seeds", 0, MAX_SEED)
    for row in rows:
        require(row.architecture in names, f"{where}.expect: {row.architecture!r} is not in the experiment")
    return Experiment(
        name=name,
        architectures=tuple(names),
        num_pairs=_ints(entry.get("num_pairs"), f"{where}.num_pairs", 1),
        d_state=_ints(entry.get("d_state"), f"{where}.d_state", 1),
        seeds=seeds,
        lrs=_rates(entry.get("lrs"), f"{where}.lrs"),
        model=_overrides(ModelConfig, entry.get("model"), f"{where}.model", forbidden=AXES),
        train=_overrides(TrainConfig, entry.get("train"), f"{where}.train", forbidden=AXES),
        expect=rows,
        question=str(entry.get("question", "")),
        confirm=_confirm(entry.get("confirm", "edge"), f"{where}.confirm"),
        extra_seeds=_extra_seeds(entry.get("extra_seeds"), names, seeds, f"{where}.extra_seeds"),
    )


def _extra_seeds(value: Any, names: list[str], seeds: tuple[int, ...], where: str) -> tuple:
    """{architecture: [seed, ...]} as (architecture, seeds) pairs: architectures of the experiment,
    seeds not among its `seeds`."""
    if value is None:
        return ()
    require(isinstance(value, Mapping), f"{where} must map architectures to lists of seeds, got {value!r}")
    out = []
    for arch, extra in value.items():
        require(arch in names, f"{where}: {arch!r} is not in the experiment's architectures")
        extra = _ints(extra, f"{where}.{arch}", 0, MAX_SEED)
        again = sorted(set(extra) & set(seeds))
        require(not again, f"{where}.{arch}: seed(s) {again} are already in the experiment's seeds")
        out.append((arch, extra))
    return tuple(out)


CONFIRM_MODES = ("none", "selected", "edge", "all")


def _confirm(value: Any, where: str) -> str:
    require(value in CONFIRM_MODES, f"{where} must be one of {', '.join(CONFIRM_MODES)}, got {value!r}")
    return value


def _suffix(overridden: Mapping[str, Any]) -> str:
    if not overridden:
        return ""
    text = json.dumps(
        {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(overridden.items())}, sort_keys=True
    )
    return "-x" + hashlib.sha256(text.encode()).hexdigest()[:6]


def _resolve(
    experiment: Experiment,
    arch: Architecture,
    num_pairs: int,
    d_state: int,
    lr: float,
    seed: int,
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    run: RunSettings,
) -> Cell:
    where = f"experiments.{experiment.name}, architecture {arch.name}, d_state {d_state}"
    base_model = {
        **model,
        **dict(arch.model),
        "variant": arch.variant,
        "name": arch.name,
        "hybrid_positions": arch.hybrid_positions,
        "d_state": d_state,
    }
    base_train = {**train, "lr": lr, "seed": seed, "device": run.device, "backend": run.backend}
    try:
        resolved_model = from_mapping(ModelConfig, {**base_model, **dict(experiment.model)}, "model")
        resolved_train = from_mapping(TrainConfig, {**base_train, **dict(experiment.train)}, "train")
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    overridden = {f"model.{k}": v for k, v in experiment.model if base_model.get(k, _MISSING) != v}
    overridden |= {f"train.{k}": v for k, v in experiment.train if base_train.get(k, _MISSING) != v}
    return Cell(
        architecture=arch.name,
        num_pairs=num_pairs,
        model=resolved_model,
        train=resolved_train,
        suffix=_suffix(overridden),
        experiments=(experiment.name,),
    )


_MISSING = object()


def resolve_cells(
    experiments: tuple[Experiment, ...],
    architectures: Mapping[str, Architecture],
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    run: RunSettings,
) -> tuple[Cell, ...]:
    """Every experiment's grid, resolved; a cell two experiments share appears once, listing both."""
    cells: dict[str, Cell] = {}
    for experiment in experiments:
        for name in experiment.architectures:
            arch = architectures[name]
            for num_pairs in experiment.num_pairs:
                for d_state in experiment.d_state:
                    for lr in arch.lrs or experiment.lrs:
                        for seed in experiment.seeds_of(name):
                            cell = _resolve(experiment, arch, num_pairs, d_state, lr, seed, model, train, run)
                            if cell.id in cells:
                                known = cells[cell.id]
                                require(
                                    known.model == cell.model and known.train == cell.train,
                                    f"cell {cell.id} resolves to different settings in two experiments",
                                )
                                cell = dataclasses.replace(known, experiments=known.experiments + cell.experiments)
                            cells[cell.id] = cell
    return tuple(cells.values())


def _section(raw: Mapping[str, Any], name: str, kind: type = dict) -> Any:
    value = raw.get(name)
    require(isinstance(value, kind), f"{name}: expected a {'list' if kind is list else 'mapping'}, got {value!r}")
    return value


def build_recall_params(raw: Any, source: str = "params.yaml") -> RecallParams:
    """Validate a parsed params mapping into a `Params`; the first problem is one ConfigError line."""
    require(isinstance(raw, Mapping), f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return _build(raw, source)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _build(raw: Mapping[str, Any], source: str) -> RecallParams:
    missing = [name for name in SECTIONS if name not in raw]
    require(not missing, f"missing section(s) {', '.join(missing)}")
    run = from_mapping(RunSettings, _section(raw, "run"), "run")
    data = from_mapping(DataSettings, _section(raw, "data"), "data")
    model = _section(raw, "model")
    train = _section(raw, "train")
    for forbidden in ("d_state", "variant", "name", "hybrid_positions"):
        require(forbidden not in model, f"model.{forbidden} belongs to architectures or experiments")
    for forbidden in ("lr", "seed", "device", "backend"):
        require(forbidden not in train, f"train.{forbidden} belongs to experiments (lrs, seeds) or run")
    model_pairs = _overrides(ModelConfig, model, "model")
    train_pairs = _overrides(TrainConfig, train, "train")
    entries = _section(raw, "architectures", list)
    architectures = [_architecture(entry, i) for i, entry in enumerate(entries)]
    names = [arch.name for arch in architectures]
    require(len(set(names)) == len(names), f"architectures: names must be unique, got {names}")
    by_name = {arch.name: arch for arch in architectures}
    experiments = tuple(_experiment(str(name), entry, by_name) for name, entry in _section(raw, "experiments").items())
    require(bool(experiments), "experiments: at least one experiment is needed")
    cells = resolve_cells(experiments, by_name, model, train, run)
    for num_pairs in sorted({cell.num_pairs for cell in cells}):
        try:
            mqar = data.mqar(num_pairs)
        except ConfigError as err:
            raise ConfigError(f"num_pairs {num_pairs} with the data settings: {err}") from None
        batch = max(cell.train.batch_size for cell in cells if cell.num_pairs == num_pairs)
        require(batch <= mqar.train_size, f"train.batch_size ({batch}) exceeds data.train_size ({mqar.train_size})")
    return RecallParams(
        run=run,
        data=data,
        model=model_pairs,
        train=train_pairs,
        evaluate=from_mapping(EvaluateSettings, _section(raw, "evaluate"), "evaluate"),
        report=from_mapping(ReportSettings, _section(raw, "report"), "report"),
        architectures=tuple(architectures),
        experiments=experiments,
        cells=cells,
        source=source,
    )


def load_recall_params(path: str | Path) -> RecallParams:
    """Read params.yaml and validate the recall study's sections of it."""
    return build_recall_params(read_yaml(Path(path)), str(path))


def describe(params: RecallParams) -> Iterator[str]:
    """Lines the check command prints: cells per experiment and their union."""
    for experiment in params.experiments:
        count = sum(1 for cell in params.cells if experiment.name in cell.experiments)
        yield f"  {experiment.name}: {count} cells ({len(experiment.architectures)} architectures)"
    shared = sum(1 for cell in params.cells if len(cell.experiments) > 1)
    yield f"  union: {len(params.cells)} cells ({shared} shared by two or more experiments)"


def cell_record(cell: Cell) -> dict[str, Any]:
    """The cell's resolved settings as JSON-ready data (written beside its metrics)."""
    return {
        "id": cell.id,
        "architecture": cell.architecture,
        "num_pairs": cell.num_pairs,
        "experiments": list(cell.experiments),
        "model": to_dict(cell.model),
        "train": to_dict(cell.train),
    }


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    """`--params FILE --cell ID`: how both orchestrators call a recall stage (settings from the tree)."""
    parser.add_argument("--params", type=Path, help="params.yaml: take the cell's settings from it (with --cell)")
    parser.add_argument("--cell", help="the cell's id, ARCH/STEM (`python -m align_mamba.pipeline check` lists them)")


def cell_from_args(args: argparse.Namespace) -> Cell | None:
    """The cell named by `--params/--cell`, or None when the stage is run with explicit flags."""
    if (args.params is None) != (args.cell is None):
        raise ConfigError("--params and --cell go together")
    if args.params is None:
        return None
    by_hand = sorted(key.split("__", 1)[1] for key, value in vars(args).items() if "__" in key and value is not None)
    if by_hand:
        raise ConfigError(f"--cell takes its settings from {args.params}; drop --{by_hand[0].replace('_', '-')}")
    return load_recall_params(args.params).cell(args.cell)


def require_path(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    if value is None:
        raise ConfigError(f"--{name} is required (or give --params and --cell)")
    return value
