"""Attention mixers through torch's scaled_dot_product_attention.

SDPA dispatches to the FlashAttention-2 kernel on Hopper/Ampere GPUs for bf16 inputs, to the
memory-efficient kernel otherwise, and to a math fallback on CPU; the separate flash-attn package
adds nothing at these head sizes, so it is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from align_mamba.errors import ConfigError


def _check_heads(d_model: int, n_heads: int, rotary: bool) -> int:
    if d_model % n_heads:
        raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    head_dim = d_model // n_heads
    if rotary and head_dim % 2:
        raise ConfigError(f"rotary embeddings need an even head dim, got d_model/n_heads = {head_dim}")
    return head_dim


def rotary(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotate query/key pairs by their position (GPT-NeoX half-split RoPE).

    x: (B, H, L, Dh) → (B, H, L, Dh); `offset` is the position of x's first token.
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    positions = torch.arange(offset, offset + x.shape[-2], device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (L, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions. Causal by default (decoder use)."""

    def __init__(self, d_model: int, n_heads: int, causal: bool = True, rope_base: float = 10000.0):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, _check_heads(d_model, n_heads, rotary=True)
        self.causal, self.rope_base = causal, rope_base
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D)."""
        batch, length, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, length, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, Dh)
        q, k = rotary(q, base=self.rope_base), rotary(k, base=self.rope_base)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, L, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, -1))


class CrossAttention(nn.Module):
    """Multi-head attention from decoder states to a memory (the encoder output).

    No positions are added: the encoder already wrote them into the memory, and the decoder's
    query carries its own through the Mamba mixer that precedes this layer.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, _check_heads(d_model, n_heads, rotary=False)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x: (B, Lq, D), memory: (B, Lk, D) → (B, Lq, D)."""
        batch, q_len, _ = x.shape
        q = self.q_proj(x).view(batch, q_len, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, Lq, Dh)
        kv = self.kv_proj(memory).view(batch, memory.shape[1], 2, self.n_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, Lk, Dh)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(batch, q_len, -1))
