"""Typed configuration of one grid cell: model and training settings, validated in one place.

Every value reaches the package through these dataclasses, whether it comes from a YAML file or
the command line; `__post_init__` rejects bad combinations with one line naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from align_mamba.backends import BACKENDS
from align_mamba.errors import ConfigError

DECODER_VARIANTS = ("mamba2", "mamba1", "transformer")
HYBRID_VARIANTS = ("hybrid",)
VARIANTS = DECODER_VARIANTS + HYBRID_VARIANTS
SSM_MIXERS = ("mamba2", "mamba1")
DEVICES = ("auto", "cpu", "cuda")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _require_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(value > 0, f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """One architecture variant.

    variant: mamba2 | mamba1 | transformer (decoder-only LMs over the decoder layout: the raw
    state-capacity test, `hybrid_positions: []`) or hybrid (a bidirectional Mamba encoder and a
    Mamba decoder with cross-attention after the mixer at each layer in `hybrid_positions`).
    """

    variant: str = "mamba2"
    name: str = ""
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 64
    hybrid_positions: tuple[int, ...] = ()
    ssm: str = "mamba2"
    encoder_layers: int = 2
    n_heads: int = 4
    headdim: int = 32
    d_conv: int = 4
    expand: int = 2
    chunk_size: int = 64
    mlp_ratio: int = 4
    vocab_size: int = 8192

    def __post_init__(self) -> None:
        _require_choice("variant", self.variant, VARIANTS)
        _require_choice("ssm", self.ssm, SSM_MIXERS)
        _require(re.fullmatch(r"[A-Za-z0-9_.-]*", self.name) is not None,
                 f"name must use only letters, digits, '_', '.', '-' (it becomes a path), got {self.name!r}")
        _require_positive(self, "d_model", "n_layers", "d_state", "encoder_layers", "n_heads",
                          "headdim", "d_conv", "expand", "chunk_size", "mlp_ratio", "vocab_size")
        _require(self.d_model % self.n_heads == 0,
                 f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        _require(self.mixer != "attention" or (self.d_model // self.n_heads) % 2 == 0,
                 f"rotary embeddings need an even head dim, got d_model/n_heads = {self.d_model // self.n_heads}")
        if self.mixer == "mamba2":
            d_inner = self.expand * self.d_model
            _require(d_inner % self.headdim == 0,
                     f"expand*d_model ({d_inner}) must be divisible by headdim ({self.headdim}); "
                     f"try headdim={math.gcd(d_inner, 64)}")
        self._check_positions()

    def _check_positions(self) -> None:
        positions = self.hybrid_positions
        if self.variant in DECODER_VARIANTS:
            _require(not positions, f"variant {self.variant} is decoder-only: hybrid_positions must be [], "
                                    f"got {list(positions)} (use variant hybrid)")
            return
        _require(bool(positions), "variant hybrid needs at least one hybrid position; "
                                  "hybrid_positions [] is the decoder-only model (variant mamba2 or mamba1)")
        _require(len(set(positions)) == len(positions), f"hybrid_positions has duplicates: {list(positions)}")
        bad = [p for p in positions if not 0 <= p < self.n_layers]
        _require(not bad, f"hybrid_positions {bad} outside [0, n_layers={self.n_layers}); "
                          f"raise n_layers to at least {max(positions) + 1}")

    @property
    def label(self) -> str:
        """The architecture's name in reports and paths: `name`, else e.g. `mamba2` or `hybrid-0_2`."""
        if self.name:
            return self.name
        if self.variant in HYBRID_VARIANTS:
            return f"{self.variant}-" + "_".join(str(p) for p in self.hybrid_positions)
        return self.variant

    @property
    def mixer(self) -> str:
        """The sequence mixer of the (decoder) blocks: mamba2, mamba1 or attention."""
        if self.variant == "transformer":
            return "attention"
        return self.ssm if self.variant == "hybrid" else self.variant

    @property
    def layout(self) -> str:
        """Which MQAR layout the variant reads: `decoder` (one causal sequence) or `seq2seq`."""
        return "seq2seq" if self.variant in HYBRID_VARIANTS else "decoder"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one cell. `steps` is a budget; validation accuracy may stop it earlier."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    checkpoint_every: int = 100
    patience: int = 5
    target_accuracy: float = 1.0
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    backend: str = "auto"

    def __post_init__(self) -> None:
        _require_positive(self, "steps", "batch_size", "lr", "eval_every", "checkpoint_every",
                          "patience", "eval_batch_size", "grad_clip")
        _require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _require(0 < self.target_accuracy <= 1, f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        _require_choice("device", self.device, DEVICES)
        _require_choice("backend", self.backend, BACKENDS)


def _accepts(annotation: Any, value: Any) -> bool:
    """Strict type check: YAML's '1e-3' (a string) or `true` must not pass as a number."""
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(annotation) is tuple:
        return isinstance(value, (list, tuple)) and all(_accepts(int, v) for v in value)
    if isinstance(annotation, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    return isinstance(value, annotation)


def from_mapping(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and mistyped values by name."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    _require(not unknown, f"unknown key(s) in {section}: {', '.join(unknown)}")
    for name, value in values.items():
        _require(_accepts(hints[name], value),
                 f"{section}.{name} must be {_type_name(hints[name])}, got {value!r} ({type(value).__name__})")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return "a list of integers"
    return getattr(annotation, "__name__", str(annotation))


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


@dataclass(frozen=True)
class CellConfig:
    """One grid cell: what to train, on which data, with which optimisation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

