"""Pure-PyTorch chunked scans of the matrix-state mixers: gated linear attention and the delta rule.

These are the `reference` backend of Mamba-3 and (Gated) DeltaNet, as ssd.py is Mamba-2's: they run
on any device and in float64, compute in float32 at least and return the input's dtype. Each works
chunk by chunk: inside a chunk the outputs come from a (C × C) masked product, across chunks one
(K × V) state per head is carried by a short Python loop (L / chunk_size steps).

Notation: B batch, L sequence length, H heads, K key (state) dimension, V value dimension, C chunk
length. The state S of a head is (K, V), the layout of flash-linear-attention's kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from align_mamba.mixers.ssd import _compute_dtype


def _chunks(t: Tensor, chunk_size: int) -> Tensor:
    """(B, L, ...) with L a multiple of chunk_size → (B, L/C, C, ...)."""
    return t.unflatten(1, (t.shape[1] // chunk_size, chunk_size))


def _pad_time(t: Tensor, pad: int) -> Tensor:
    """Zeros after the last position of (B, L, ...): a padded step has k = 0 and log-decay 0, so it
    neither writes nor decays the state, and its outputs are dropped."""
    return F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))


def _decay_matrix(gc: Tensor, strict: bool) -> Tensor:
    """exp(gc_i - gc_j) for j <= i (j < i if strict), exactly 0 elsewhere: (..., C) → (..., C, C).

    The difference is masked to -inf before the exponential, so the upper triangle (where gc_i - gc_j
    would be positive and could overflow) never reaches exp.
    """
    C = gc.shape[-1]
    keep = torch.tril(torch.ones(C, C, dtype=torch.bool, device=gc.device), diagonal=-1 if strict else 0)
    return torch.exp((gc[..., :, None] - gc[..., None, :]).masked_fill(~keep, -torch.inf))


def gated_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
):
    """Linear attention with a scalar decay per head and step.

    Recurrence, per batch and head:
        S_t = exp(a_t) · S_{t-1} + k_t v_tᵀ          (S: (K, V))
        o_t = S_tᵀ q_t

    Arguments:
        q, k: (B, L, H, K);  v: (B, L, H, V);  log_decay a: (B, L, H), <= 0
        initial_state: (B, H, K, V) or None for zeros
    Returns:
        o: (B, L, H, V) in v's dtype, and with return_final_state S_L (B, H, K, V) in the compute dtype.
    """
    dtype, out_dtype = _compute_dtype(q, k, v, log_decay), v.dtype
    batch, seqlen, heads, _ = q.shape
    chunk_size = max(1, min(chunk_size, seqlen))
    pad = (-seqlen) % chunk_size
    q, k, v, a = (_chunks(_pad_time(t.to(dtype), pad), chunk_size) for t in (q, k, v, log_decay))
    gc = torch.cumsum(a, dim=2).transpose(-1, -2)  # (B, c, H, C): log-decay from the chunk start to i
    # Inside each chunk: o_i = sum_{j<=i} exp(gc_i - gc_j) (q_i . k_j) v_j
    scores = torch.einsum("bcihk,bcjhk->bchij", q, k) * _decay_matrix(gc, strict=False)
    o = torch.einsum("bchij,bcjhv->bcihv", scores, v)
    state = q.new_zeros(batch, heads, k.shape[-1], v.shape[-1]) if initial_state is None else initial_state.to(dtype)
    to_end = torch.exp(gc[..., -1:] - gc)  # (B, c, H, C): decay from position j to the chunk's end
    inter = []
    for c in range(q.shape[1]):
        # Entering state, decayed to position i, read by q_i; then the chunk's own writes.
        inter.append(torch.einsum("bihk,bhkv->bihv", q[:, c], state) * gc[:, c].exp().transpose(1, 2)[..., None])
        state = state * gc[:, c, :, -1].exp()[..., None, None] + torch.einsum(
            "bjhk,bjhv->bhkv", k[:, c] * to_end[:, c].transpose(1, 2)[..., None], v[:, c]
        )
    o = (o + torch.stack(inter, dim=1)).flatten(1, 2)[:, :seqlen].to(out_dtype)
    return (o, state) if return_final_state else o


def delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    log_decay: Tensor | None = None,
    scale: float | None = None,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
):
    """The (gated) delta rule of DeltaNet and Gated DeltaNet, chunked with the WY/UT representation.

    Recurrence, per batch and head (a_t = 0 without log_decay: DeltaNet):
        S_t = exp(a_t) · (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ      (S: (K, V))
        o_t = scale · S_tᵀ q_t
    i.e. decay, read the value the state stores under k_t, move it by β_t toward v_t: the semantics
    of flash-linear-attention's chunk_gated_delta_rule / chunk_delta_rule with q, k as given (no
    normalisation here) and scale defaulting to K^-1/2.

    Within a chunk write S_t = Γ_t S_0 + Σ_{j<=t} (Γ_t/Γ_j) k_j u_jᵀ (Γ the decay from the chunk
    start). The pseudo-values then solve a unit lower-triangular system
        (I + M) U = β ⊙ (V - Γ ⊙ K S_0),   M_ij = β_i (Γ_i/Γ_j) (k_i . k_j) for j < i,
    whose inverse is applied to βV and βΓK once for all chunks; the loop over chunks only forms
    U = W_v - W_k S_0 and carries S.

    Arguments:
        q, k: (B, L, H, K);  v: (B, L, H, V);  beta: (B, L, H);  log_decay: (B, L, H) (<= 0) or None
        initial_state: (B, H, K, V) or None for zeros
    Returns:
        o: (B, L, H, V) in v's dtype, and with return_final_state S_L (B, H, K, V) in the compute dtype.
    """
    dtype, out_dtype = _compute_dtype(q, k, v, beta, log_decay), v.dtype
    batch, seqlen, heads, d_k = q.shape
    scale = d_k**-0.5 if scale is None else scale
    if log_decay is None:
        log_decay = beta.new_zeros(beta.shape)
    chunk_size = max(1, min(chunk_size, seqlen))
    pad = (-seqlen) % chunk_size
    q, k, v, beta, a = (_chunks(_pad_time(t.to(dtype), pad), chunk_size) for t in (q, k, v, beta, log_decay))
    q = q * scale
    gc = torch.cumsum(a, dim=2).transpose(-1, -2)  # (B, c, H, C)
    beta_h = beta.transpose(-1, -2)[..., None]  # (B, c, H, C, 1)
    kk = torch.einsum("bcihk,bcjhk->bchij", k, k)
    M = beta_h * kk * _decay_matrix(gc, strict=True)  # (B, c, H, C, C), strictly lower
    eye = torch.eye(M.shape[-1], dtype=dtype, device=M.device)
    kh, vh = k.transpose(2, 3), v.transpose(2, 3)  # (B, c, H, C, K), (B, c, H, C, V)
    rhs = torch.cat([beta_h * vh, beta_h * gc.exp()[..., None] * kh], dim=-1)
    w = torch.linalg.solve_triangular(eye + M, rhs, upper=False, unitriangular=True)
    w_v, w_k = w.split([vh.shape[-1], d_k], dim=-1)
    qk = torch.einsum("bcihk,bcjhk->bchij", q, k) * _decay_matrix(gc, strict=False)  # (B, c, H, C, C)
    to_end = torch.exp(gc[..., -1:] - gc)[..., None]  # (B, c, H, C, 1)
    state = q.new_zeros(batch, heads, d_k, v.shape[-1]) if initial_state is None else initial_state.to(dtype)
    out = []
    for c in range(q.shape[1]):
        u = w_v[:, c] - w_k[:, c] @ state  # (B, H, C, V)
        qc = q[:, c].transpose(1, 2)  # (B, H, C, K)
        out.append(gc[:, c].exp()[..., None] * (qc @ state) + qk[:, c] @ u)
        state = gc[:, c, :, -1].exp()[..., None, None] * state + (kh[:, c] * to_end[:, c]).transpose(-1, -2) @ u
    o = torch.stack(out, dim=1).transpose(2, 3).flatten(1, 2)[:, :seqlen]  # (B, L, H, V)
    o = o.to(out_dtype)
    return (o, state) if return_final_state else o
