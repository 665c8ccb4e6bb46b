"""A cell's metrics as one versioned dataclass: what `recall.evaluate` writes and the report reads.

`CellMetrics.to_json()` is the metrics file (results/cells/ARCH/STEM.json); `CellMetrics.from_json`
reads it back, field by field and type by type, so no reader indexes into nested dicts. Every
number is a field of its own: a breakdown bucket carries its numeric bounds, never a label to parse.
A file of another `schema_version` (or of none: written before this schema) is one ConfigError
line saying to re-run the evaluation.

A failed cell may be rerun at twice its step budget; `Confirm` reads that rerun's file
(STEM.confirm.json): `{"needed": false, "reason": ...}` or `{"needed": true, ...its CellMetrics}`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align_mamba.core.errors import ConfigError
from align_mamba.core.params import from_mapping, to_dict
from align_mamba.recall.config import ModelConfig, TrainConfig

SCHEMA_VERSION = 1


def chance_loss(num_values: int) -> float:
    """ln(#values): the cross-entropy of a model that has learned the answer is some value but not
    which one. A loss still there at the end means optimisation never started (the chance plateau),
    as opposed to a model that recalls some pairs."""
    return math.log(num_values)


# Per-step losses are noisy (one batch each); the final loss is their mean over the last steps.
FINAL_LOSS_STEPS = 20


@dataclass(frozen=True)
class Bucket:
    """Accuracy over the queries whose measure lies in [low, high), and how many there were."""

    low: float
    high: float
    accuracy: float
    count: int


@dataclass(frozen=True)
class Slice:
    """One test set. by_key_position: buckets of the queried key's position as a fraction of the
    pairs, [0, 0.1) ... [0.9, 1.0); by_distance: buckets of the key→query distance in tokens,
    [1, 2), [2, 4), [4, 8) ..."""

    data: str
    num_pairs: int
    accuracy: float
    exact_match: float
    sequences: int
    queries: int
    by_key_position: tuple[Bucket, ...]
    by_distance: tuple[Bucket, ...]


@dataclass(frozen=True)
class StateSize:
    """Floats the model keeps about the context (recall.models.state_size_floats)."""

    ssm: int
    attention: int
    total: int


@dataclass(frozen=True)
class ValidationPoint:
    """One validation pass during training (on the validation split, never the test split)."""

    step: int
    accuracy: float
    exact_match: float


@dataclass(frozen=True)
class CellRecord:
    """The cell's resolved settings (recall.params.cell_record), typed."""

    id: str
    architecture: str
    num_pairs: int
    experiments: tuple[str, ...]
    model: ModelConfig
    train: TrainConfig

    @classmethod
    def from_json(cls, data: Any, source: str = "cell") -> CellRecord:
        return _decode(cls, data, source)


@dataclass(frozen=True)
class CellMetrics:
    """Everything measured about one trained cell.

    accuracy / exact_match: per query / per sequence on the cell's own test split (slices[0]).
    val_accuracy: the best validation accuracy, the only number selection may use.
    train_accuracy: on the first `train_examples_checked` training examples (memorisation check).
    steps_trained: optimiser steps actually run; validation: the validation curve.
    final_train_loss: mean training loss over the last FINAL_LOSS_STEPS steps; chance_loss ln(#values).
    backend / device: what evaluated the cell; train_backend / train_device: what trained it.
    """

    cell: CellRecord
    accuracy: float
    exact_match: float
    val_accuracy: float
    best_step: int
    train_accuracy: float
    train_examples_checked: int
    steps_trained: int
    stop_reason: str
    validation: tuple[ValidationPoint, ...]
    final_train_loss: float
    chance_loss: float
    state_size: StateSize
    parameters: int
    backend: str
    device: str
    train_backend: str
    train_device: str
    wall_seconds: float
    slices: tuple[Slice, ...]
    schema_version: int = SCHEMA_VERSION

    @property
    def architecture(self) -> str:
        return self.cell.architecture

    @property
    def num_pairs(self) -> int:
        return self.cell.num_pairs

    @property
    def d_state(self) -> int:
        return self.cell.model.d_state

    @property
    def seed(self) -> int:
        return self.cell.train.seed

    @property
    def lr(self) -> float:
        return self.cell.train.lr

    @property
    def suffix(self) -> str:
        """The id's `-x<hash>` (an experiment's overrides), "" without one: the id after its axes."""
        axes = f"{self.architecture}/np{self.num_pairs}-ds{self.d_state}-lr{self.lr:g}-s{self.seed}"
        return self.cell.id[len(axes) :] if self.cell.id.startswith(axes) else ""

    def steps_to_learn(self, threshold: float) -> int | None:
        """The first validation step whose accuracy reached `threshold`; None if none did."""
        return next((point.step for point in self.validation if point.accuracy >= threshold), None)

    def to_json(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_json(cls, data: Any, source: str = "metrics") -> CellMetrics:
        """The metrics of a parsed file; anything missing, mistyped or of another schema is one line."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object of cell metrics, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{source}: metrics schema version {version!r}, this code reads version "
                f"{SCHEMA_VERSION}; re-run `python -m align_mamba.recall.evaluate` on the cell"
            )
        metrics = _decode(cls, data, source)
        if not metrics.slices or metrics.slices[0].num_pairs != metrics.num_pairs:
            raise ConfigError(f"{source}: slices[0] must be the cell's own test set (num_pairs {metrics.num_pairs})")
        for name in ("accuracy", "exact_match", "val_accuracy", "train_accuracy"):
            if not 0.0 <= getattr(metrics, name) <= 1.0:
                raise ConfigError(f"{source}: {name} must be in [0, 1], got {getattr(metrics, name)}")
        return metrics


@dataclass(frozen=True)
class Confirm:
    """The 2x-budget rerun of a failed cell: `needed` false with the `reason`, or the rerun's metrics."""

    needed: bool
    reason: str = ""
    metrics: CellMetrics | None = None
    budget_factor: int = 1

    @classmethod
    def from_json(cls, data: Any, source: str = "confirm") -> Confirm:
        if not isinstance(data, dict) or not isinstance(data.get("needed"), bool):
            raise ConfigError(f"{source}: expected a JSON object with a boolean 'needed'")
        rest = {k: v for k, v in data.items() if k not in ("needed", "reason", "budget_factor")}
        reason = str(data.get("reason", ""))
        if not data["needed"]:
            return cls(needed=False, reason=reason)
        factor = data.get("budget_factor")
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise ConfigError(f"{source}: a rerun needs an integer budget_factor >= 2, got {factor!r}")
        return cls(needed=True, reason=reason, metrics=CellMetrics.from_json(rest, source), budget_factor=factor)


def read_json(path: Path) -> Any:
    """The parsed file; unreadable or malformed JSON is a ConfigError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None


def read_cell_metrics(path: Path) -> CellMetrics:
    return CellMetrics.from_json(read_json(path), str(path))


def _encode(value: Any) -> Any:
    if isinstance(value, (ModelConfig, TrainConfig)):
        return to_dict(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(annotation: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as `annotation`: dataclasses field by field, tuples item by item."""
    if annotation in (ModelConfig, TrainConfig):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return from_mapping(annotation, value, where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(annotation)
        fields = {f.name: f for f in dataclasses.fields(annotation)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        missing = [
            name
            for name, f in fields.items()
            if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}")
        return annotation(**{name: _decode(hints[name], item, f"{where}.{name}") for name, item in value.items()})
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(annotation)[0]
        return tuple(_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _decode(inner[0], value, where)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation in (str, bool):
        if not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected a {annotation.__name__}, got {value!r}")
        return value
    raise TypeError(f"no decoder for {annotation!r}")  # a schema field of a type this module forgot
