"""Pre-norm residual blocks shared by the decoder-only LM and the hybrid encoder-decoder."""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.recall.config import ModelConfig
from align_mamba.core.errors import ConfigError
from align_mamba.mixers import CrossAttention, Mamba, Mamba2, SelfAttention


def make_mixer(config: ModelConfig, kind: str, backend: str) -> nn.Module:
    """A sequence mixer by name: mamba2, mamba1 or attention (causal, RoPE)."""
    if kind == "mamba2":
        return Mamba2(config.d_model, config.d_state, d_conv=config.d_conv, expand=config.expand,
                      headdim=config.headdim, chunk_size=config.chunk_size, backend=backend)
    if kind == "mamba1":
        return Mamba(config.d_model, config.d_state, d_conv=config.d_conv, expand=config.expand, backend=backend)
    if kind == "attention":
        return SelfAttention(config.d_model, config.n_heads)
    raise ConfigError(f"unknown mixer {kind!r}; known: mamba2, mamba1, attention")


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

    def __init__(self, config: ModelConfig, kind: str, backend: str):
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model)
        self.mixer = make_mixer(config, kind, backend)
        self.mlp = MLP(config.d_model, config.mlp_ratio) if kind == "attention" else None
        self.mlp_norm = nn.RMSNorm(config.d_model) if self.mlp is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D)."""
        x = x + self.mixer(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x


class BidirectionalBlock(nn.Module):
    """An encoder block: a forward and a reversed Mamba pass over the same normed input, summed."""

    def __init__(self, config: ModelConfig, backend: str):
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model)
        self.forward_mixer = make_mixer(config, config.ssm, backend)
        self.backward_mixer = make_mixer(config, config.ssm, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D); every output position sees the whole sequence."""
        h = self.norm(x)
        backward = self.backward_mixer(h.flip(1)).flip(1)
        return x + self.forward_mixer(h) + backward


class HybridDecoderBlock(nn.Module):
    """Mamba first builds a contextual query; cross-attention (if this layer has it) then retrieves."""

    def __init__(self, config: ModelConfig, backend: str, cross_attention: bool):
        super().__init__()
        self.norm = nn.RMSNorm(config.d_model)
        self.mixer = make_mixer(config, config.ssm, backend)
        self.cross_norm = nn.RMSNorm(config.d_model) if cross_attention else None
        self.cross_attention = CrossAttention(config.d_model, config.n_heads) if cross_attention else None

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x: (B, Lq, D), memory: (B, Lk, D) → (B, Lq, D)."""
        x = x + self.mixer(self.norm(x))
        if self.cross_attention is not None:
            x = x + self.cross_attention(self.cross_norm(x), memory)
        return x
