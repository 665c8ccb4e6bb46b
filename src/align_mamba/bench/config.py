"""The benchmark's parameters: one typed, frozen, validated dataclass (params.yaml `bench:`)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from align_mamba.core.backends import resolve_device
from align_mamba.core.params import from_mapping, require
from align_mamba.recall.config import DEVICES, HYBRID_VARIANTS, VARIANTS, ModelConfig
from align_mamba.recall.mqar import MQARConfig

MODES = ("forward", "train", "decode")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RUNGS = range(7)


def _check_names(field: str, values: tuple[str, ...], known) -> None:
    for value in values:
        require(value in known, f"bench.{field}: unknown name {value!r}; known: {', '.join(known)}")
    require(len(set(values)) == len(values), f"bench.{field} repeats a name: {list(values)}")


def _check_increasing(field: str, values: tuple[int, ...], minimum: int) -> None:
    require(all(v >= minimum for v in values), f"bench.{field} must be integers >= {minimum}, got {list(values)}")
    require(
        all(a < b for a, b in zip(values, values[1:])),
        f"bench.{field} must be strictly increasing (longer lengths are skipped after an OOM), got {list(values)}",
    )


@dataclass(frozen=True)
class BenchConfig:
    """What `python -m align_mamba.bench` measures. Defaults are the H100 anchor's shapes.

    mixers: names from cases.MIXER_CASES; architectures: ModelConfig variants built with
    build_model from the model fields below (n_layers, encoder_layers, hybrid_positions, ...).
    lengths: sequence lengths of forward/train; decode_contexts: context lengths of one decode
    step. Every row's batch is max(1, tokens_per_batch // length). dtype auto: bf16 on cuda,
    fp32 on cpu. ladder_*: the training-step ladder (train_step.py); ladder_rungs () skips it.
    """

    device: str = "auto"
    dtype: str = "auto"
    mixers: tuple[str, ...] = (
        "attention",
        "mamba2",
        "mamba2_reference",
        "mamba1",
        "mamba3",
        "raw_attention",
        "raw_mamba2",
        "raw_mamba1",
    )
    architectures: tuple[str, ...] = ("mamba2", "hybrid")
    modes: tuple[str, ...] = MODES
    lengths: tuple[int, ...] = (1024, 4096, 16384, 65536, 262144)
    decode_contexts: tuple[int, ...] = (1024, 4096, 16384, 65536, 262144)
    tokens_per_batch: int = 131072
    d_model: int = 512
    d_states: tuple[int, ...] = (64, 128)
    headdim: int = 64
    n_heads: int = 8
    expand: int = 2
    d_conv: int = 4
    chunk_size: int = 256
    n_layers: int = 4
    encoder_layers: int = 2
    hybrid_positions: tuple[int, ...] = (0, 2)
    repeats: int = 10
    warmup: int = 2
    seed: int = 0
    ladder_rungs: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    ladder_d_model: int = 256
    ladder_n_layers: int = 6
    ladder_d_state: int = 64
    ladder_headdim: int = 64
    ladder_batch: int = 256
    ladder_seq_len: int = 512
    ladder_num_pairs: int = 64

    def __post_init__(self) -> None:
        from align_mamba.bench.cases import MIXER_CASES  # the name -> case map lives with the cases

        require(self.device in DEVICES, f"bench.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        require(
            self.dtype == "auto" or self.dtype in DTYPES,
            f"bench.dtype must be one of auto, {', '.join(DTYPES)}, got {self.dtype!r}",
        )
        _check_names("mixers", self.mixers, MIXER_CASES)
        _check_names("architectures", self.architectures, VARIANTS)
        _check_names("modes", self.modes, MODES)
        require(bool(self.modes), "bench.modes must name at least one of " + ", ".join(MODES))
        require(
            bool(self.mixers or self.architectures or self.ladder_rungs),
            "bench: nothing to measure (mixers, architectures and ladder_rungs are all empty)",
        )
        _check_increasing("lengths", self.lengths, 1)
        _check_increasing("decode_contexts", self.decode_contexts, 1)
        _check_increasing("d_states", self.d_states, 1)
        require(bool(self.d_states), "bench.d_states must hold at least one value")
        for name in ("tokens_per_batch", "repeats", "n_layers", "encoder_layers"):
            require(getattr(self, name) >= 1, f"bench.{name} must be >= 1, got {getattr(self, name)}")
        require(self.warmup >= 0, f"bench.warmup must be >= 0, got {self.warmup}")
        require(self.seed >= 0, f"bench.seed must be >= 0, got {self.seed}")
        for variant in ("mamba2", *self.architectures):  # shape checks, one line naming the value
            self.model_config(variant, self.d_states[0])
        self._check_ladder()

    def _check_ladder(self) -> None:
        if not self.ladder_rungs:
            return
        require(
            all(r in RUNGS for r in self.ladder_rungs),
            f"bench.ladder_rungs must be in 0..{RUNGS[-1]}, got {list(self.ladder_rungs)}",
        )
        _check_increasing("ladder_rungs", self.ladder_rungs, 0)
        require(
            self.ladder_rungs[0] == 0,
            "bench.ladder_rungs must include rung 0 (the naive step every speedup is measured against)",
        )
        require(self.ladder_batch >= 1, f"bench.ladder_batch must be >= 1, got {self.ladder_batch}")
        self.ladder_model_config()
        self.ladder_data_config(1)

    def model_config(self, variant: str, d_state: int) -> ModelConfig:
        """The ModelConfig of an architecture row (and of the mixer shape, via variant mamba2)."""
        hybrid = variant in HYBRID_VARIANTS
        return ModelConfig(
            variant=variant,
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_state=d_state,
            hybrid_positions=self.hybrid_positions if hybrid else (),
            encoder_layers=self.encoder_layers,
            n_heads=self.n_heads,
            headdim=self.headdim,
            d_conv=self.d_conv,
            expand=self.expand,
            chunk_size=self.chunk_size,
        )

    def ladder_model_config(self) -> ModelConfig:
        """The training ladder's pre-norm Mamba-2 LM (the anchor's: 6 blocks, d_model 256, d_state 64)."""
        return ModelConfig(
            variant="mamba2",
            d_model=self.ladder_d_model,
            n_layers=self.ladder_n_layers,
            d_state=self.ladder_d_state,
            headdim=self.ladder_headdim,
            d_conv=self.d_conv,
            expand=self.expand,
            chunk_size=self.chunk_size,
        )

    def ladder_data_config(self, batches: int) -> MQARConfig:
        """MQAR in the decoder layout, every pair queried once: `batches` batches of ladder_batch."""
        return MQARConfig(
            num_pairs=self.ladder_num_pairs,
            seq_len=self.ladder_seq_len,
            train_size=batches * self.ladder_batch,
            val_size=1,
            test_size=1,
            seed=self.seed,
            num_queries=None,
            layouts=("decoder",),
        )

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        """auto: bf16 on cuda (the kernels' training dtype), fp32 on cpu."""
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]


def batch_size(tokens_per_batch: int, length: int) -> int:
    """Rows per batch at one length: max(1, tokens_per_batch // length)."""
    return max(1, tokens_per_batch // length)


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def load_bench_config(values: Mapping) -> BenchConfig:
    """BenchConfig from a mapping (params.yaml's `bench:` merged with flags): unknown keys and
    mistyped values are one ConfigError line naming the key."""
    return from_mapping(BenchConfig, values, "bench")


def config_fields() -> list[tuple[str, type, bool]]:
    """(name, element type, is_list) of every BenchConfig field, for the CLI."""
    hints = typing.get_type_hints(BenchConfig)
    fields = []
    for f in dataclasses.fields(BenchConfig):
        is_list = typing.get_origin(hints[f.name]) is tuple
        fields.append((f.name, typing.get_args(hints[f.name])[0] if is_list else hints[f.name], is_list))
    return fields
