"""Pure-PyTorch scans of the Mamba mixers: Mamba-2's chunked SSD and Mamba-1's selective scan.

These are the `reference` backend: they run on any device and in float64, and define the math that
mamba-ssm's CUDA/Triton kernels implement. Both compute in float32 at least (float64 stays float64)
and return the input's dtype, like mamba-ssm's reference functions.

Notation (as in mamba-ssm): B batch, L sequence length, H heads, P head dimension, G groups of
heads that share B and C, N state size, D channels (Mamba-1), c chunks, l and s positions in a chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor
from torch.autograd.function import once_differentiable


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any input is float64, else float32: bf16/fp16 scans lose too much in cumsums."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def segsum(x: Tensor) -> Tensor:
    """Segment sums for the decay matrix: out[..., i, j] = sum(x[..., j+1 : i+1]) for j <= i, -inf above.

    x (..., T) -> (..., T, T). Built by a masked cumsum rather than a difference of cumsums, so that
    no large partial sums cancel (the stable form of ssd_minimal). exp(out) is then the lower-triangular
    decay matrix, with exact zeros above the diagonal and exponents that are never positive when x <= 0.
    Used across chunks, where the sums run over a whole sequence; within a chunk, segsum_from_cumsum.
    """
    T = x.size(-1)
    x = repeat(x, "... d -> ... d e", e=T)  # x[..., i, j] = x_i
    strict = torch.tril(torch.ones(T, T, device=x.device, dtype=torch.bool), diagonal=-1)
    x = x.masked_fill(~strict, 0)
    x_segsum = torch.cumsum(x, dim=-2)
    causal = torch.tril(torch.ones(T, T, device=x.device, dtype=torch.bool), diagonal=0)
    return x_segsum.masked_fill(~causal, -torch.inf)


def segsum_from_cumsum(x_cumsum: Tensor) -> Tensor:
    """segsum(x) from x's cumsum: out[..., i, j] = x_cumsum_i - x_cumsum_j for j <= i, -inf above.

    x_cumsum (..., T) -> (..., T, T). The form mamba-ssm's kernels use within a chunk: one broadcast
    difference, where segsum's masked cumsum over (T, T) and its backward (flip, cumsum, flip) took
    some 40% of a small CPU training step. The difference cancels partial sums of up to T terms, an
    error of about T * max|x| * eps in the exponent: fine within a chunk, not over a whole sequence.
    The diagonal is exactly 0 (c - c). Above it the difference is finite, so adding -inf gives -inf
    (never inf - inf = NaN), exp gives exact zeros, and exp's backward multiplies by those zeros.
    """
    T = x_cumsum.size(-1)
    above = torch.full((T, T), -torch.inf, device=x_cumsum.device, dtype=x_cumsum.dtype).triu_(1)
    # x_i + (-x_j), not x_i - x_j: a broadcast subtraction's backward negates the whole (T, T) gradient.
    out = x_cumsum.unsqueeze(-1) + (-x_cumsum).unsqueeze(-2)  # (..., T, T)
    # Masked by an in-place add, not masked_fill: its backward passes the gradient on without a copy
    # (the gradient above the diagonal is already 0, exp(-inf) times a finite one).
    return out.add_(above)


def ssd_chunked(x, dt, A, B, C, chunk_size, D=None, initial_state=None, return_final_state=False):
    """Mamba-2's SSD scan, computed chunk by chunk as in mamba-ssm's ssd_minimal.

    Recurrence, per batch and head (h_t is (P, N)):
        h_t = exp(dt_t * A) * h_{t-1} + dt_t * outer(x_t, B_t)
        y_t = h_t @ C_t + D * x_t

    Arguments:
        x: (B, L, H, P)
        dt: (B, L, H), already positive (softplus and dt_bias applied by the caller)
        A: (H,), negative
        B, C: (B, L, G, N), G divides H; head h uses group h // (H // G)
        chunk_size: positions per chunk; L need not be a multiple of it
        D: (H,) or (H, P) skip connection, or None
        initial_state: (B, H, P, N) state before the first position, or None for zeros
    Returns:
        y: (B, L, H, P) in x's dtype, and with return_final_state the state after the last
        position, (B, H, P, N) in the compute dtype (float32 or float64).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups = B.shape[2]
    if nheads % ngroups != 0:
        raise ValueError(f"ngroups={ngroups} must divide nheads={nheads}")
    dtype = _compute_dtype(x, dt, A, B, C)
    x_in = x
    # Short inputs (decode steps) need no padding to a full chunk: the result does not depend on it.
    chunk_size = max(1, min(chunk_size, seqlen))
    pad = (-seqlen) % chunk_size
    # Padded steps have dt = 0: decay exp(0) = 1 and no input, so the final state is unchanged.
    x, dt, B, C = (F.pad(t.to(dtype), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))

    x = rearrange(x, "b (c l) (g h) p -> b c l g h p", l=chunk_size, g=ngroups)
    B = rearrange(B, "b (c l) g n -> b c l g n", l=chunk_size)
    C = rearrange(C, "b (c l) g n -> b c l g n", l=chunk_size)
    # Chunks ahead of heads: the (l, s) scores are then laid out as the einsum batches them (no copy).
    dt = rearrange(dt, "b (c l) (g h) -> b c g h l", l=chunk_size, g=ngroups)
    dA = dt * rearrange(A.to(dtype), "(g h) -> g h 1", g=ngroups)  # (B, c, G, H/G, l), <= 0
    dA_cumsum = torch.cumsum(dA, dim=-1)  # chunk-local
    # Every term weighs x_s by dt_s: weigh x once (as ssd_minimal takes X * dt), not the (l, s) scores.
    x_dt = x * rearrange(dt, "b c g h l -> b c l g h 1")  # (B, c, l, G, H/G, P)

    # 1. Within each chunk (diagonal blocks): y_l = sum_{s<=l} (C_l . B_s) exp(dA_{s+1..l}) dt_s x_s.
    CB = torch.einsum("bclgn,bcsgn->bcgls", C, B)  # (B, c, G, l, s), shared by a group's heads
    scores = CB.unsqueeze(3) * torch.exp(segsum_from_cumsum(dA_cumsum))  # (B, c, G, H/G, l, s)
    y_diag = torch.einsum("bcghls,bcsghp->bclghp", scores, x_dt)

    # 2. Each chunk's own contribution to the state at its end (decay to the chunk's last position).
    decay_states = torch.exp(dA_cumsum[..., -1:] - dA_cumsum)  # (B, c, G, H/G, l)
    x_weighted = x_dt * rearrange(decay_states, "b c g h l -> b c l g h 1")
    states = torch.einsum("bclgn,bclghp->bcghpn", B, x_weighted)  # (B, c, G, H/G, P, N)

    # 3. Pass states across chunks: the state entering chunk k sums chunks < k, each decayed.
    if initial_state is None:
        initial_state = torch.zeros_like(states[:, :1])
    else:
        initial_state = rearrange(initial_state.to(dtype), "b (g h) p n -> b 1 g h p n", g=ngroups)
    states = torch.cat([initial_state, states], dim=1)  # (B, c+1, G, H/G, P, N)
    # segsum, not segsum_from_cumsum: these sums run over the whole sequence.
    chunk_sums = rearrange(dA_cumsum[..., -1], "b c g h -> b g h c")
    decay_chunk = torch.exp(segsum(F.pad(chunk_sums, (1, 0))))  # (B, G, H/G, c+1, c+1)
    states = torch.einsum("bghzc,bcghpn->bzghpn", decay_chunk, states)
    states, final_state = states[:, :-1], states[:, -1]

    # 4. Output from the state entering each chunk (off-diagonal blocks), decayed to position l.
    state_decay_out = rearrange(torch.exp(dA_cumsum), "b c g h l -> b c l g h 1")
    y_off = torch.einsum("bclgn,bcghpn->bclghp", C, states) * state_decay_out

    y = rearrange(y_diag + y_off, "b c l g h p -> b (c l) (g h) p")[:, :seqlen]
    if D is not None:
        D = D.to(dtype)
        y = y + x_in.to(dtype) * (D.unsqueeze(-1) if D.dim() == 1 else D)
    y = y.to(x_in.dtype)
    if return_final_state:
        return y, rearrange(final_state, "b g h p n -> b (g h) p n")
    return y


def _time_major(M: Tensor) -> Tensor:
    """Input-dependent B or C, (B, N, L) or (B, G, N, L), as (L, B, G, N) with G = 1 for the former."""
    if M.dim() == 3:
        return rearrange(M, "b n l -> l b 1 n").contiguous()
    return rearrange(M, "b g n l -> l b g n").contiguous()


class _LinearScan(torch.autograd.Function):
    """hs[t] = a[t] * hs[t-1] + b[t] over dim 0 (time), with hs[-1] = h0: a (L, ...), b (L, ...), h0 (...).

    Autograd through a Python loop allocates two fresh tensors per step and stacks them at the end;
    on the CPU those allocations cost more than the arithmetic. This updates one buffer in place
    (hs starts as b), and the backward runs the adjoint recurrence g[t] = dhs[t] + a[t+1] * g[t+1]
    in place too.
    """

    @staticmethod
    def forward(ctx, a, b, h0):
        a = a.contiguous()
        hs = b.clone(memory_format=torch.contiguous_format)
        hs[0].addcmul_(a[0], h0)
        for t in range(1, a.shape[0]):
            hs[t].addcmul_(a[t], hs[t - 1])
        ctx.save_for_backward(a, hs, h0)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        a, hs, h0 = ctx.saved_tensors
        g = grad_hs.clone(memory_format=torch.contiguous_format)  # g[t] = dloss/dhs[t], all paths
        for t in range(a.shape[0] - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        grad_a = torch.empty_like(a)
        torch.mul(g[0], h0, out=grad_a[0])
        torch.mul(g[1:], hs[:-1], out=grad_a[1:])
        grad_h0 = a[0] * g[0] if ctx.needs_input_grad[2] else None
        return grad_a, g, grad_h0


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    initial_state=None,
):
    """Mamba-1's selective scan, with the signature and semantics of mamba-ssm's selective_scan_ref.

    Recurrence, per batch and channel d (h_t is (N,), A diagonal):
        delta_t = softplus(delta_t + delta_bias)      (each step optional)
        h_t = exp(delta_t * A_d) * h_{t-1} + delta_t * B_t * u_t
        y_t = C_t . h_t + D_d * u_t,   then y_t * silu(z_t) when z is given

    Arguments:
        u, delta: (B, D, L)
        A: (D, N), real
        B, C: (B, N, L) or (B, G, N, L) (input-dependent) or (D, N) (constant)
        D: (D,) or None;  z: (B, D, L) or None;  delta_bias: (D,) or None
        initial_state: (B, D, N) or None for zeros
    Returns:
        y: (B, D, L) in u's dtype, and with return_last_state the final state (B, D, N)
        in the compute dtype.

    The decays and inputs of all steps are computed at once; only the state update h = a * h + b
    runs as a loop over time (in _LinearScan), and y comes from one einsum after it.
    """
    dtype_in = u.dtype
    dtype = _compute_dtype(u, delta, A, B, C)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype).unsqueeze(-1)
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, seqlen = u.shape
    # Time-major (L, B, D, N) throughout: each step of the loop reads contiguous slices, and the
    # big tensors come out of broadcasts of small ones without permuting copies.
    delta_t = rearrange(delta, "b d l -> l b d").contiguous()
    deltaA = (delta_t.unsqueeze(-1) * A).exp_()  # (L, B, D, N), in (0, 1]
    delta_u = delta_t * rearrange(u, "b d l -> l b d")  # (L, B, D)
    if B.dim() == 2:
        deltaB_u = delta_u.unsqueeze(-1) * B
    else:
        B = _time_major(B)  # (L, B, G, N)
        delta_u = rearrange(delta_u, "l b (g h) -> l b g h 1", g=B.shape[2])
        deltaB_u = (delta_u * B.unsqueeze(3)).flatten(2, 3)  # (L, B, D, N)

    h0 = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.to(dtype)
    hs = _LinearScan.apply(deltaA, deltaB_u, h0)  # (L, B, D, N)

    if C.dim() == 2:
        y = torch.einsum("lbdn,dn->lbd", hs, C)
    else:
        C = _time_major(C)  # (L, B, G, N)
        hs_groups = hs.unflatten(2, (C.shape[2], -1))  # (L, B, G, D/G, N), a view
        y = torch.einsum("lbghn,lbgn->lbgh", hs_groups, C).flatten(2)  # (L, B, D)
    y = rearrange(y, "l b d -> b d l")
    if D is not None:
        y = y + u * D.to(dtype).unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    y = y.to(dtype_in)
    return (y, hs[-1]) if return_last_state else y
