"""Typed configuration of one grid cell: model and training settings, validated in one place.

Every value reaches the package through these dataclasses, whether it comes from a YAML file or
the command line; `__post_init__` rejects bad combinations with one line naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from align_mamba.core.params import require, require_choice, require_positive
from align_mamba.core.train_config import DEVICES, TrainConfig
from align_mamba.mixers.spec import HEADDIM_MIXERS, SSM_MIXERS, MixerSpec, require_headdim_fits

# Decoder-only stacks of one recurrent mixer (their variant names the mixer), the Transformer, the
# Jamba-style decoder hybrid and the Zamba-style stack with one shared attention block.
PURE_SSM_VARIANTS = ("mamba2", "mamba1", "mamba3", "gated_deltanet", "deltanet")
DECODER_VARIANTS = (
    "mamba2",
    "mamba1",
    "transformer",
    "decoder_hybrid",
    "mamba3",
    "gated_deltanet",
    "deltanet",
    "zamba",
)
# Encoder-decoders over the seq2seq layout: the cross-attention hybrid and Polar-Mem-Mamba.
HYBRID_VARIANTS = ("hybrid", "polar_mem")
VARIANTS = DECODER_VARIANTS + HYBRID_VARIANTS
# Polar-Mem-Mamba's gated shortcut attention layers when hybrid_positions is left empty.
POLAR_MEM_GSA_LAYERS = (0, 2)
__all__ = [
    "DECODER_VARIANTS",
    "DEVICES",
    "HYBRID_VARIANTS",
    "PURE_SSM_VARIANTS",
    "SSM_MIXERS",
    "VARIANTS",
    "CellConfig",
    "ModelConfig",
    "TrainConfig",
]


@dataclass(frozen=True)
class ModelConfig:
    """One architecture variant.

    variant: mamba2 | mamba1 | mamba3 | gated_deltanet | deltanet | transformer (decoder-only LMs
    over the decoder layout: the raw state-capacity test, `hybrid_positions: []`); decoder_hybrid
    (causal self-attention at `hybrid_positions`, `ssm` elsewhere); zamba (an `ssm` stack with one
    attention block, its weights shared, after every `shared_attention_every` layers); hybrid (a
    bidirectional encoder and a decoder with cross-attention after the mixer at each layer in
    `hybrid_positions`); polar_mem (Polar-Mem-Mamba: that encoder, decoder blocks of polarized
    channels, a cross-layer memory pool of `mem_pool_size` summaries of `mem_summary_dim` floats
    written every `mem_update_freq` layers, gated shortcut attention at `hybrid_positions`, by
    default (0, 2)).
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
    shared_attention_every: int = 2
    mem_pool_size: int = 50
    mem_summary_dim: int = 64
    mem_update_freq: int = 4

    def __post_init__(self) -> None:
        require_choice("variant", self.variant, VARIANTS)
        if self.variant == "polar_mem" and not self.hybrid_positions:
            # frozen dataclass: the default is filled in once, here, so every reader sees it
            object.__setattr__(self, "hybrid_positions", tuple(p for p in POLAR_MEM_GSA_LAYERS if p < self.n_layers))
        require_choice("ssm", self.ssm, SSM_MIXERS)
        require(
            re.fullmatch(r"[A-Za-z0-9_.-]*", self.name) is not None,
            f"name must use only letters, digits, '_', '.', '-' (it becomes a path), got {self.name!r}",
        )
        require_positive(
            self,
            "d_model",
            "n_layers",
            "d_state",
            "encoder_layers",
            "n_heads",
            "headdim",
            "d_conv",
            "expand",
            "chunk_size",
            "mlp_ratio",
            "vocab_size",
            "shared_attention_every",
            "mem_pool_size",
            "mem_summary_dim",
            "mem_update_freq",
        )
        require(
            self.d_model % self.n_heads == 0, f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
        )
        uses_rotary = self.mixer == "attention" or self.variant in ("decoder_hybrid", "zamba")
        require(
            not uses_rotary or (self.d_model // self.n_heads) % 2 == 0,
            f"rotary embeddings need an even head dim, got d_model/n_heads = {self.d_model // self.n_heads}",
        )
        if self.mixer in HEADDIM_MIXERS:
            require_headdim_fits(self.d_model, self.expand, self.headdim)
        if self.mixer == "mamba3":
            # A quarter of d_state are rotary angles, and mamba-ssm's kernel needs an even count of them.
            require(
                self.d_state % 8 == 0,
                f"mamba3 needs d_state a multiple of 8 (its kernel rotates d_state/4 "
                f"angles, an even number), got {self.d_state}",
            )
        if self.mixer in ("gated_deltanet", "deltanet"):
            require(
                self.d_state <= 256,
                f"{self.mixer}'s kernels take keys of at most 256 per head: d_state must be <= 256, got {self.d_state}",
            )
        if self.variant == "zamba":
            require(
                self.shared_attention_every <= self.n_layers,
                f"zamba applies its shared attention after every shared_attention_every "
                f"({self.shared_attention_every}) layers: it must be <= n_layers ({self.n_layers})",
            )
        self._check_positions()

    def _check_positions(self) -> None:
        positions = self.hybrid_positions
        if self.variant in DECODER_VARIANTS and self.variant != "decoder_hybrid":
            require(
                not positions,
                f"variant {self.variant} is decoder-only: hybrid_positions must be [], "
                f"got {list(positions)} (use variant hybrid)",
            )
            return
        require(
            bool(positions),
            f"variant {self.variant} needs at least one hybrid position; "
            "hybrid_positions [] is the decoder-only model (variant mamba2 or mamba1)"
            + (
                f" (its default {list(POLAR_MEM_GSA_LAYERS)} lies outside n_layers={self.n_layers})"
                if self.variant == "polar_mem"
                else ""
            ),
        )
        require(len(set(positions)) == len(positions), f"hybrid_positions has duplicates: {list(positions)}")
        bad = [p for p in positions if not 0 <= p < self.n_layers]
        require(
            not bad,
            f"hybrid_positions {bad} outside [0, n_layers={self.n_layers}); "
            f"raise n_layers to at least {max(positions) + 1}",
        )

    @property
    def label(self) -> str:
        """The architecture's name in reports and paths: `name`, else e.g. `mamba2` or `hybrid-0_2`."""
        if self.name:
            return self.name
        if self.hybrid_positions:
            return f"{self.variant}-" + "_".join(str(p) for p in self.hybrid_positions)
        return self.variant

    @property
    def mixer(self) -> str:
        """The recurrent mixer of the (decoder) blocks, one of SSM_MIXERS, or attention (Transformer)."""
        if self.variant == "transformer":
            return "attention"
        return self.variant if self.variant in PURE_SSM_VARIANTS else self.ssm

    def layer_mixer(self, layer: int) -> str:
        """The mixer of decoder layer `layer`: causal self-attention at a decoder hybrid's positions."""
        if self.variant == "decoder_hybrid" and layer in self.hybrid_positions:
            return "attention"
        return self.mixer

    @property
    def shared_attention_layers(self) -> tuple[int, ...]:
        """zamba: the layers after which the shared attention block runs (every shared_attention_every-th)."""
        if self.variant != "zamba":
            return ()
        return tuple(i for i in range(self.n_layers) if (i + 1) % self.shared_attention_every == 0)

    def mixer_spec(self, backend: str) -> MixerSpec:
        """What the blocks need to build this model's mixers on `backend`."""
        return MixerSpec.of(self, backend)

    @property
    def layout(self) -> str:
        """Which MQAR layout the variant reads: `decoder` (one causal sequence) or `seq2seq`."""
        return "seq2seq" if self.variant in HYBRID_VARIANTS else "decoder"


@dataclass(frozen=True)
class CellConfig:
    """One grid cell: what to train, on which data, with which optimisation."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
