"""The byte-level secret tagger: every byte of a file gets a class, 0 = "none" or a secret format.

    bytes (B, L) → embedding (256 → D) → n_layers × layer → RMSNorm → linear head → logits (B, L, C)

Variants (the layer, by name in LAYERS):
    bimamba      a bidirectional Mamba block (forward + reversed pass over the same normed input,
                 summed; mixers.blocks.BidirectionalBlock): every byte sees the whole sequence.
    hybrid       bimamba, plus a windowed bidirectional attention block after the Mamba block at
                 each layer index in `attention_layers` (exact local lookups next to the SSM).
    transformer  the baseline: windowed bidirectional attention (RoPE) + SwiGLU MLP blocks.
Attention is banded (|i - j| <= window), so every variant runs in memory linear in L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from align_mamba.core.params import require, require_choice, require_positive
from align_mamba.mixers.attention import SelfAttention
from align_mamba.mixers.blocks import MLP, BidirectionalBlock
from align_mamba.mixers.spec import SSM_MIXERS, MixerSpec, require_headdim_fits

TAGGER_VARIANTS = ("bimamba", "hybrid", "transformer")
BYTE_VOCAB = 256


@dataclass(frozen=True)
class TaggerConfig:
    """One tagger architecture. Mamba fields as in mixers.spec.MixerSpec; attention fields for hybrid/transformer.

    window: attention reach in bytes (|i - j| <= window); attention_layers: the hybrid's layer
    indices that get a windowed attention block after the bidirectional Mamba block.
    """

    variant: str = "bimamba"
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16
    headdim: int = 32
    expand: int = 2
    d_conv: int = 4
    chunk_size: int = 64
    n_heads: int = 4
    window: int = 128
    attention_layers: tuple[int, ...] = ()
    ssm: str = "mamba2"
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        require_choice("variant", self.variant, TAGGER_VARIANTS)
        require_choice("ssm", self.ssm, SSM_MIXERS)
        require_positive(
            self,
            "d_model",
            "n_layers",
            "d_state",
            "headdim",
            "expand",
            "d_conv",
            "chunk_size",
            "n_heads",
            "window",
            "mlp_ratio",
        )
        self._check_attention_layers()
        if self.variant != "bimamba":
            require(
                self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0,
                f"n_heads: d_model ({self.d_model}) / n_heads ({self.n_heads}) must be an even integer "
                f"(rotary embeddings)",
            )
        if self.variant != "transformer" and self.ssm == "mamba2":
            require_headdim_fits(self.d_model, self.expand, self.headdim)

    def _check_attention_layers(self) -> None:
        layers = self.attention_layers
        if self.variant != "hybrid":
            require(
                not layers,
                f"attention_layers is only for variant hybrid, got {list(layers)} with variant {self.variant}",
            )
            return
        require(bool(layers), "variant hybrid needs at least one index in attention_layers (else use bimamba)")
        require(len(set(layers)) == len(layers), f"attention_layers has duplicates: {list(layers)}")
        bad = [i for i in layers if not 0 <= i < self.n_layers]
        require(not bad, f"attention_layers {bad} outside [0, n_layers={self.n_layers})")

    @property
    def mixer(self) -> str:
        """The Mamba mixer the backend must run (mamba2 | mamba1), or attention for the transformer."""
        return "attention" if self.variant == "transformer" else self.ssm

    def mixer_spec(self, backend: str) -> MixerSpec:
        """What mixers.blocks needs to build this tagger's Mamba mixers on `backend`."""
        return MixerSpec.of(self, backend)


class WindowedAttentionBlock(nn.Module):
    """x + attn(norm(x)) with bidirectional banded attention, then optionally x + mlp(norm(x))."""

    def __init__(self, config: TaggerConfig, mlp: bool):
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model)
        self.attention = SelfAttention(config.d_model, config.n_heads, causal=False, window=config.window)
        self.mlp_norm = nn.RMSNorm(config.d_model) if mlp else None
        self.mlp = MLP(config.d_model, config.mlp_ratio) if mlp else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D); position i sees positions within `window` of it."""
        x = x + self.attention(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class MambaLayer(nn.Module):
    """bimamba / hybrid layer `index`: a bidirectional Mamba block, then attention if the config asks."""

    def __init__(self, config: TaggerConfig, backend: str, index: int):
        super().__init__()
        self.mamba = BidirectionalBlock(config.mixer_spec(backend))
        with_attention = index in config.attention_layers
        self.attention = WindowedAttentionBlock(config, mlp=False) if with_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D)."""
        x = self.mamba(x)
        return x if self.attention is None else self.attention(x)


class TransformerLayer(WindowedAttentionBlock):
    """The baseline's layer: windowed bidirectional attention + MLP (backend unused: no Mamba)."""

    def __init__(self, config: TaggerConfig, backend: str, index: int):
        super().__init__(config, mlp=True)


LAYERS: dict[str, type[nn.Module]] = {"bimamba": MambaLayer, "hybrid": MambaLayer, "transformer": TransformerLayer}


class ByteTagger(nn.Module):
    """Per-byte classifier. forward(bytes (B, L) int64 in [0, 256)) → logits (B, L, num_classes).

    class_names[0] is "none"; the others are secret formats (all of the dataset's, so a held-out
    format has a class that never trains). backend: "kernels" | "reference" for the Mamba mixers
    ("sdpa" for the transformer, which has none).
    """

    def __init__(self, config: TaggerConfig, backend: str, num_classes: int, class_names: Sequence[str] | None = None):
        super().__init__()
        require(num_classes >= 2, f"num_classes must be >= 2 (none + at least one format), got {num_classes}")
        names = (
            tuple(class_names)
            if class_names is not None
            else ("none",) + tuple(f"class_{k}" for k in range(1, num_classes))
        )
        require(
            len(names) == num_classes and names[0] == "none",
            f"class_names must be {num_classes} names starting with 'none', got {list(names)}",
        )
        self.config, self.backend, self.class_names = config, backend, names
        self.embedding = nn.Embedding(BYTE_VOCAB, config.d_model)
        nn.init.normal_(self.embedding.weight, std=1 / math.sqrt(config.d_model))
        self.layers = nn.ModuleList(LAYERS[config.variant](config, backend, i) for i in range(config.n_layers))
        self.norm_f = nn.RMSNorm(config.d_model)
        self.head = nn.Linear(config.d_model, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward(self, byte_ids: torch.Tensor) -> torch.Tensor:
        """byte_ids: (B, L) long → logits (B, L, C)."""
        x = self.embedding(byte_ids)  # (B, L, D)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm_f(x))  # (B, L, C)
