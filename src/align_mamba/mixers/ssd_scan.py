"""Mamba-2's SSD in its recurrent (scan) forms, for inference on the CPU.

ssd.ssd_chunked (mamba-ssm's ssd_minimal) passes the state between chunks with a (c+1) x (c+1) decay
matrix over all c chunks of the sequence: O(c^2 * H * P * N) work, which on a 35 KB window with
64-byte chunks is some 5 GFLOP per mixer, far more than the projections around it. A GPU hides it;
a CPU does not. The two functions here compute the same recurrence in time linear in L:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * outer(x_t, B_t)        h_t: (P, N) per batch and head
    y_t = h_t @ C_t + D * x_t

ssd_recurrent   the recurrence itself, one time step per loop iteration over the whole batch
                (no chunks at all: the plain scan, the form a decoder's step() runs).
ssd_scan        the same recurrence taken `block` steps at a time: inside a block the outputs are
                the closed form of the recurrence (the block's lower-triangular decay matrix, block^2
                per position), and the state is carried from block to block by the recurrence, so
                the per-step Python overhead is paid L / block times instead of L times.

Both take ssd_chunked's arguments and return the same values up to float rounding (tests compare
them with a float64 step-by-step loop). Notation as in ssd.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from align_mamba.mixers.ssd import _compute_dtype, segsum_from_cumsum


def _check_groups(x: Tensor, B: Tensor) -> int:
    nheads, ngroups = x.shape[2], B.shape[2]
    if nheads % ngroups != 0:
        raise ValueError(f"ngroups={ngroups} must divide nheads={nheads}")
    return ngroups


def ssd_recurrent(x, dt, A, B, C, D=None, initial_state=None, return_final_state=False):
    """The SSD recurrence one step at a time.

    x (B, L, H, P), dt (B, L, H) positive, A (H,) negative, B and C (B, L, G, N), D (H,) or (H, P) or
    None, initial_state (B, H, P, N) or None. Returns y (B, L, H, P) in x's dtype (and the final
    state (B, H, P, N) in the compute dtype with return_final_state).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups = _check_groups(x, B)
    dtype = _compute_dtype(x, dt, A, B, C)
    per_group = nheads // ngroups
    decay = torch.exp(dt.to(dtype) * A.to(dtype))  # (B, L, H)
    dtx = x.to(dtype) * dt.to(dtype).unsqueeze(-1)  # (B, L, H, P)
    Bh = B.to(dtype).repeat_interleave(per_group, dim=2)  # (B, L, H, N)
    Ch = C.to(dtype).repeat_interleave(per_group, dim=2)
    state = (
        x.new_zeros(batch, nheads, headdim, B.shape[-1], dtype=dtype)
        if initial_state is None
        else initial_state.to(dtype).clone()
    )
    y = x.new_empty(batch, seqlen, nheads, headdim, dtype=dtype)
    for t in range(seqlen):
        state.mul_(decay[:, t, :, None, None]).add_(dtx[:, t, :, :, None] * Bh[:, t, :, None, :])
        torch.matmul(state, Ch[:, t, :, :, None], out=y[:, t, :, :, None])
    if D is not None:
        D = D.to(dtype)
        y = y + x.to(dtype) * (D.unsqueeze(-1) if D.dim() == 1 else D)
    y = y.to(x.dtype)
    return (y, state) if return_final_state else y


def ssd_scan(x, dt, A, B, C, block=16, D=None, initial_state=None, return_final_state=False):
    """The SSD recurrence carried block by block (see the module docstring); arguments as ssd_recurrent,
    block: time steps per block (any L; the last block is padded with dt = 0, which changes nothing).
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups = _check_groups(x, B)
    dtype = _compute_dtype(x, dt, A, B, C)
    x_in = x
    block = max(1, min(block, seqlen))
    pad = (-seqlen) % block
    x, dt, B, C = (F.pad(t.to(dtype), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    # Blocks on dim 1; heads split into (G, H/G) so B and C are never copied per head.
    x = rearrange(x, "b (c l) (g h) p -> b c g h l p", l=block, g=ngroups)
    B = rearrange(B, "b (c l) g n -> b c g l n", l=block)
    C = rearrange(C, "b (c l) g n -> b c g l n", l=block)
    dt = rearrange(dt, "b (c l) (g h) -> b c g h l", l=block, g=ngroups)
    dA = dt * rearrange(A.to(dtype), "(g h) -> g h 1", g=ngroups)  # (B, c, G, H/G, l), <= 0
    dA_cumsum = torch.cumsum(dA, dim=-1)  # block-local
    # Every term weighs x_s by dt_s: weigh x once, not the (l, s) scores.
    x_dt = x * dt.unsqueeze(-1)  # (B, c, G, H/G, l, P)

    # Inside each block, all at once: y_l = sum_{s<=l} (C_l . B_s) exp(dA_{s+1..l}) dt_s x_s.
    CB = C @ B.transpose(-1, -2)  # (B, c, G, l, s)
    scores = CB.unsqueeze(3) * torch.exp(segsum_from_cumsum(dA_cumsum))  # (B, c, G, H/G, l, s)
    y = scores @ x_dt  # (B, c, G, H/G, l, P)
    # What each block adds to the state at its end, and how much the state entering it decays over it.
    x_weighted = x_dt * torch.exp(dA_cumsum[..., -1:] - dA_cumsum).unsqueeze(-1)  # (B, c, G, H/G, l, P)
    block_states = x_weighted.transpose(-1, -2) @ B.unsqueeze(3)  # (B, c, G, H/G, P, N)
    block_decay = torch.exp(dA_cumsum[..., -1])  # (B, c, G, H/G)

    # The recurrence across blocks, block-major so each step reads and writes contiguous memory:
    # entering[k] = the state before block k.
    block_states = rearrange(block_states, "b c g h p n -> c b g h p n").contiguous()
    block_decay = rearrange(block_decay, "b c g h -> c b g h 1 1").contiguous()
    state = (
        x.new_zeros(block_states.shape[1:])
        if initial_state is None
        else rearrange(initial_state.to(dtype), "b (g h) p n -> b g h p n", g=ngroups).clone()
    )
    entering = torch.empty_like(block_states)
    for k in range(block_states.shape[0]):
        entering[k] = state
        state = torch.addcmul(block_states[k], state, block_decay[k])
    entering = rearrange(entering, "c b g h p n -> b c g h n p")

    # Output from the entering state, decayed to each position in the block.
    y = y + (C.unsqueeze(3) @ entering) * torch.exp(dA_cumsum).unsqueeze(-1)
    y = rearrange(y, "b c g h l p -> b (c l) (g h) p")[:, :seqlen]
    if D is not None:
        D = D.to(dtype)
        y = y + x_in.to(dtype) * (D.unsqueeze(-1) if D.dim() == 1 else D)
    y = y.to(x_in.dtype)
    if return_final_state:
        return y, rearrange(state, "b g h p n -> b (g h) p n")
    return y
