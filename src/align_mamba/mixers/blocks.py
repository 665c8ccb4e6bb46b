"""Pre-norm residual blocks shared by the MQAR models and the byte tagger, built from a MixerSpec."""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.core.errors import ConfigError
from align_mamba.mixers.attention import CrossAttention, SelfAttention
from align_mamba.mixers.delta import DeltaNet, GatedDeltaNet
from align_mamba.mixers.mamba1 import Mamba
from align_mamba.mixers.mamba2 import Mamba2
from align_mamba.mixers.mamba3 import Mamba3
from align_mamba.mixers.spec import MixerSpec


def _delta_rule(build, spec: MixerSpec) -> nn.Module:
    """A DeltaNet-family mixer (GatedDeltaNet or DeltaNet: the same settings, one decay gate apart)."""
    return build(
        spec.d_model,
        spec.d_state,
        headdim=spec.headdim,
        expand=spec.expand,
        d_conv=spec.d_conv,
        chunk_size=spec.chunk_size,
        backend=spec.backend,
    )


MIXERS = {
    "mamba2": lambda spec: Mamba2(
        spec.d_model,
        spec.d_state,
        d_conv=spec.d_conv,
        expand=spec.expand,
        headdim=spec.headdim,
        chunk_size=spec.chunk_size,
        backend=spec.backend,
    ),
    "mamba1": lambda spec: Mamba(
        spec.d_model, spec.d_state, d_conv=spec.d_conv, expand=spec.expand, backend=spec.backend
    ),
    "mamba3": lambda spec: Mamba3(
        spec.d_model,
        spec.d_state,
        expand=spec.expand,
        headdim=spec.headdim,
        chunk_size=spec.chunk_size,
        backend=spec.backend,
    ),
    "gated_deltanet": lambda spec: _delta_rule(GatedDeltaNet, spec),
    "deltanet": lambda spec: _delta_rule(DeltaNet, spec),
    "attention": lambda spec: SelfAttention(spec.d_model, spec.n_heads),
}


def make_mixer(spec: MixerSpec, kind: str) -> nn.Module:
    """A sequence mixer by name: one of spec.SSM_MIXERS or attention (causal, RoPE)."""
    if kind not in MIXERS:
        raise ConfigError(f"unknown mixer {kind!r}; known: {', '.join(MIXERS)}")
    return MIXERS[kind](spec)


class MLP(nn.Module):
    """SwiGLU feed-forward of the Transformer baseline."""

    def __init__(self, d_model: int, ratio: int):
        super().__init__()
        hidden = ratio * d_model * 2 // 3
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(nn.functional.silu(gate) * up)


class MixerBlock(nn.Module):
    """x + mixer(norm(x)), then optionally x + mlp(norm(x)) (Transformer blocks only)."""

    def __init__(self, spec: MixerSpec, kind: str):
        super().__init__()
        self.norm = nn.RMSNorm(spec.d_model)
        self.mixer = make_mixer(spec, kind)
        self.mlp = MLP(spec.d_model, spec.mlp_ratio) if kind == "attention" else None
        self.mlp_norm = nn.RMSNorm(spec.d_model) if self.mlp is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D)."""
        x = x + self.mixer(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class BidirectionalBlock(nn.Module):
    """An encoder block: a forward and a reversed `spec.ssm` pass over the same normed input, summed."""

    def __init__(self, spec: MixerSpec):
        super().__init__()
        self.norm = nn.RMSNorm(spec.d_model)
        self.forward_mixer = make_mixer(spec, spec.ssm)
        self.backward_mixer = make_mixer(spec, spec.ssm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D); every output position sees the whole sequence."""
        h = self.norm(x)
        backward = self.backward_mixer(h.flip(1)).flip(1)
        return x + self.forward_mixer(h) + backward


class HybridDecoderBlock(nn.Module):
    """Mamba first builds a contextual query; cross-attention (if this layer has it) then retrieves."""

    def __init__(self, spec: MixerSpec, cross_attention: bool):
        super().__init__()
        self.norm = nn.RMSNorm(spec.d_model)
        self.mixer = make_mixer(spec, spec.ssm)
        self.cross_norm = nn.RMSNorm(spec.d_model) if cross_attention else None
        self.cross_attention = CrossAttention(spec.d_model, spec.n_heads) if cross_attention else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x: (B, Lq, D), memory: (B, Lk, D) → (B, Lq, D)."""
        x = x + self.mixer(self.norm(x))
        if self.cross_attention is not None:
            x = x + self.cross_attention(self.cross_norm(x), memory)
        return x


class SharedAttentionBlock(nn.Module):
    """Zamba's shared block: causal attention and an MLP over [x, x0], the residual stream beside the
    input embeddings (concatenated, projected back to d_model), one set of weights for every use.

    The caller adds its output to the residual through a projection of its own per use, so the
    uses share the attention and the MLP but not how they write back.
    """

    def __init__(self, spec: MixerSpec):
        super().__init__()
        self.in_norm = nn.RMSNorm(2 * spec.d_model)
        self.in_proj = nn.Linear(2 * spec.d_model, spec.d_model, bias=False)
        self.norm = nn.RMSNorm(spec.d_model)
        self.attention = SelfAttention(spec.d_model, spec.n_heads)
        self.mlp_norm = nn.RMSNorm(spec.d_model)
        self.mlp = MLP(spec.d_model, spec.mlp_ratio)

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) residual stream, x0: (B, L, D) input embeddings → (B, L, D)."""
        h = self.in_proj(self.in_norm(torch.cat([x, x0], dim=-1)))
        h = h + self.attention(self.norm(h))
        return h + self.mlp(self.mlp_norm(h))
