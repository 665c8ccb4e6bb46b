"""Attention mixers through torch's scaled_dot_product_attention.

SDPA dispatches to the FlashAttention-2 kernel on Hopper/Ampere GPUs for bf16 inputs, to the
memory-efficient kernel otherwise, and to a math fallback on CPU; the separate flash-attn package
adds nothing at these head sizes, so it is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from align_mamba.core.errors import ConfigError


def _check_heads(d_model: int, n_heads: int, rotary: bool) -> int:
    if d_model % n_heads:
        raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
    head_dim = d_model // n_heads
    if rotary and head_dim % 2:
        raise ConfigError(f"rotary embeddings need an even head dim, got d_model/n_heads = {head_dim}")
    return head_dim


def rotary(x: torch.Tensor, offset: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotate query/key pairs by their position (GPT-NeoX half-split RoPE): the reference formula.

    x: (B, H, L, Dh) → (B, H, L, Dh); `offset` is the position of x's first token. SelfAttention
    computes the same rotation from cached tables (RotaryTables, apply_rotary).
    """
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    positions = torch.arange(offset, offset + x.shape[-2], device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)  # (L, Dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class RotaryTables:
    """RoPE's cos and signed-sin tables, built once per device and dtype and grown on demand.

    Rebuilding them on every call costs a handful of small kernels per layer, which dominates a
    decode step. Plain attributes, not buffers: the tables are derived, never saved in checkpoints.
    """

    def __init__(self, head_dim: int, base: float):
        self.head_dim, self.base = head_dim, base
        self.cos: torch.Tensor | None = None
        self.signed_sin: torch.Tensor | None = None

    def get(self, end: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables for positions [0, end): cos (end, Dh) and [-sin, sin] (end, Dh)."""
        cached = self.cos
        if cached is None or cached.device != device or cached.dtype != dtype or cached.shape[0] < end:
            size = end if cached is None or cached.shape[0] >= end else max(end, 2 * cached.shape[0])
            half = self.head_dim // 2
            # Built outside inference mode: tables first made during a validation pass must still
            # serve training steps, and autograd refuses inference tensors.
            with torch.inference_mode(False), torch.no_grad():
                inv_freq = self.base ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
                angles = torch.outer(torch.arange(size, device=device, dtype=torch.float32), inv_freq)  # (size, Dh/2)
                self.cos = torch.cat((angles.cos(), angles.cos()), dim=-1).to(dtype)
                self.signed_sin = torch.cat((-angles.sin(), angles.sin()), dim=-1).to(dtype)
        return self.cos[:end], self.signed_sin[:end]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x·cos + swap_halves(x)·[-sin, sin]: `rotary`'s rotation in three kernels.

    x: (..., Dh); cos, signed_sin: broadcastable to x, e.g. (L, 1, 1, Dh) against (B, L, 2, H, Dh).
    """
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return torch.addcmul(x * cos, swapped, signed_sin)


def _fold_blocks(t: torch.Tensor) -> torch.Tensor:
    """(B, H, nb, n, Dh) → (B·nb, H, n, Dh): 4-d inputs keep SDPA on its fused kernels."""
    batch, heads, n_blocks, n, head_dim = t.shape
    return t.transpose(1, 2).reshape(batch * n_blocks, heads, n, head_dim)


def windowed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, causal: bool = False
) -> torch.Tensor:
    """SDPA restricted to the band |i - j| <= window (and j <= i if causal), in O(L·window) memory.

    q, k, v: (B, H, L, Dh) → (B, H, L, Dh). The sequence is cut into blocks of `window` positions;
    each block's queries attend to the keys of its own and both neighbouring blocks (3·window keys),
    which contain the whole band, under an exact band mask. No L × L matrix is ever built.
    """
    batch, heads, length, head_dim = q.shape
    n_blocks = -(-length // window)
    pad = n_blocks * window - length
    q = F.pad(q, (0, 0, 0, pad)).view(batch, heads, n_blocks, window, head_dim)
    # One block of zeros before and after, so block b's keys are padded blocks b, b+1, b+2.
    k, v = (
        F.pad(t, (0, 0, window, pad + window)).unfold(2, 3 * window, window).transpose(-1, -2) for t in (k, v)
    )  # each (B, H, nb, 3W, Dh)
    row = torch.arange(window, device=q.device)[:, None]
    col = torch.arange(3 * window, device=q.device)[None, :]
    offset = row + window - col  # i - j, the same in every block: (W, 3W)
    band = offset.abs() <= window
    if causal:
        band &= offset >= 0
    key_pos = torch.arange(n_blocks, device=q.device)[:, None] * window - window + col  # (nb, 3W)
    mask = band & ((key_pos >= 0) & (key_pos < length))[:, None, :]  # (nb, W, 3W)
    y = F.scaled_dot_product_attention(
        _fold_blocks(q), _fold_blocks(k), _fold_blocks(v), attn_mask=mask.repeat(batch, 1, 1)[:, None]
    )  # (B·nb, H, W, Dh)
    y = y.view(batch, n_blocks, heads, window, head_dim).transpose(1, 2)  # (B, H, nb, W, Dh)
    return y.reshape(batch, heads, n_blocks * window, head_dim)[:, :, :length]


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions. Causal by default (decoder use).

    window: attend only to positions within `window` of the query (|i - j| <= window), through
    `windowed_attention`, whose memory grows as L·window instead of L²; None is full attention.
    """

    def __init__(
        self, d_model: int, n_heads: int, causal: bool = True, rope_base: float = 10000.0, window: int | None = None
    ):
        super().__init__()
        if window is not None and window < 1:
            raise ConfigError(f"attention window must be >= 1, got {window}")
        self.n_heads, self.head_dim = n_heads, _check_heads(d_model, n_heads, rotary=True)
        self.causal, self.rope_base, self.window = causal, rope_base, window
        self.rope = RotaryTables(self.head_dim, rope_base)
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D)."""
        batch, length, _ = x.shape
        q, k, v = self._rotated_qkv(x, position=0)  # each (B, H, L, Dh)
        if self.window is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, L, Dh)
        else:
            y = windowed_attention(q, k, v, self.window, self.causal)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, -1))

    def _rotated_qkv(self, x: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, L, D), its first token at `position` → q, k (rotated), v, each (B, H, L, Dh)."""
        batch, length, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, length, 3, self.n_heads, self.head_dim)
        cos, signed_sin = self.rope.get(position + length, x.device, qkv.dtype)
        tables = (t[position:, None, None] for t in (cos, signed_sin))  # each (L, 1, 1, Dh)
        # q and k rotate together, in the projection's own layout: one pass over both.
        qk = apply_rotary(qkv[:, :, :2], *tables)  # (B, L, 2, H, Dh)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, qkv[:, :, 2].transpose(1, 2)

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None, **kwargs):
        """Zeroed key and value caches (k, v), each (B, H, max_seqlen, Dh); keys are stored rotated."""
        weight = self.qkv_proj.weight
        shape = (batch_size, self.n_heads, max_seqlen, self.head_dim)
        dtype = weight.dtype if dtype is None else dtype
        return tuple(torch.zeros(shape, device=weight.device, dtype=dtype) for _ in range(2))

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], position: int) -> torch.Tensor:
        """Decode the token at `position`: x (B, 1, D) → (B, 1, D).

        cache (k, v), each (B, H, Lmax, Dh), holds positions [0, position); this writes the token's
        key and value at `position` (in place) and attends to [position - window, position] (all of
        [0, position] without a window), so stepping through a sequence from position 0 returns
        forward()'s outputs one position at a time.
        """
        if not self.causal:
            raise ConfigError("SelfAttention.step needs causal attention (a bidirectional one sees the future)")
        k_cache, v_cache = cache
        if not 0 <= position < k_cache.shape[2]:
            raise ConfigError(f"SelfAttention.step: position {position} is outside the cache of {k_cache.shape[2]}")
        batch = x.shape[0]
        q, k, v = self._rotated_qkv(x, position)  # each (B, H, 1, Dh)
        k_cache[:, :, position] = k[:, :, 0]
        v_cache[:, :, position] = v[:, :, 0]
        start = 0 if self.window is None else max(0, position - self.window)
        keys, values = k_cache[:, :, start : position + 1], v_cache[:, :, start : position + 1]
        y = F.scaled_dot_product_attention(q, keys, values)  # (B, H, 1, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(batch, 1, -1))


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
