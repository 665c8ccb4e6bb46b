"""Mamba-3 (SISO) mixer: mamba-ssm's kernels where they run, a pure-PyTorch twin everywhere else.

As for Mamba-2, `Mamba3(...)` is a factory: with the `kernels` backend it returns mamba_ssm's
Mamba3 itself (its fused Triton SISO kernel, mamba-ssm >= 2.3.2); with `reference` it returns
`Mamba3Reference`, which has the same parameter names, shapes and initialisation and computes the
same function in plain PyTorch, so one state_dict loads into either.

Mamba-3's layer (Lahoti et al. 2026), per head, with no convolution:
    in_proj(u) → z, x, B, C, dd_dt, dd_A, trap, angles
    DT = softplus(dd_dt + dt_bias),  A = min(-softplus(dd_A), -A_floor),  α_t = exp(A_t DT_t)
    B, C ← RMSNorm(B), RMSNorm(C), then + B_bias, C_bias (per head)
    B, C rotated by θ_t = Σ_{s<=t} π·tanh(angles_s)·DT_s (a data-dependent RoPE on the first
        2·num_rope_angles state channels, pairs (0,1), (2,3), …): the complex-valued state
    trapezoidal discretisation, λ_t = sigmoid(trap_t):
        h_t = α_t h_{t-1} + (1 - λ_t) DT_t α_t B_{t-1} x_{t-1}ᵀ + λ_t DT_t B_t x_tᵀ
    y_t = h_tᵀ C_t + D x_t, then y · silu(z), out_proj.
The reference evaluates this through `gated_linear_attention` with B_s scaled by
λ_s DT_s + (1 - λ_{s+1}) DT_{s+1} (the weight x_s carries once both of its steps are in), minus the
(1 - λ_{t+1}) DT_{t+1} (C_t · B_t) x_t the diagonal then counts too much: the same decomposition as
mamba-ssm's mamba3_siso_fwd_ref.

The decay activation: mamba-ssm 2.3.2 uses -softplus(dd_A); later versions changed it to a
"heavy-tail" 1/(1-x) form. `a_activation` selects it, "softplus" by default (the PyPI release); the
GPU parity test reads the installed module's and sets the reference to match.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from align_mamba.core.backends import resolve_backend
from align_mamba.core.errors import ConfigError
from align_mamba.mixers.linear_scan import gated_linear_attention
from align_mamba.mixers.mamba2 import RMSNormGated


def heavy_tail_activation(x: torch.Tensor) -> torch.Tensor:
    """1 + x for x >= 0, 1 / (1 - x) below: positive, continuous, differentiable at 0."""
    return x.clamp_min(0) + torch.reciprocal(1 - x.clamp_max(0))


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x by angles[..., i]; channels past 2·R stay as they are.

    x: (..., N), angles: (..., R) with 2R <= N → (..., N).
    """
    rot = 2 * angles.shape[-1]
    pairs = x[..., :rot].unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos(), angles.sin()
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    return torch.cat((rotated, x[..., rot:]), dim=-1)


def mamba3_siso_scan(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, chunk_size=64):
    """Mamba-3's SISO recurrence (the inputs of mamba-ssm's mamba3_siso_combined, time-major heads).

    Arguments:
        q, k: (B, L, N) normed C and B (one group), v: (B, L, H, P) the x heads
        adt, dt: (B, H, L) A·DT (<= 0) and DT (> 0); trap: (B, H, L) raw (sigmoid applied here)
        q_bias, k_bias: (H, N); angles: (B, L, H, R) raw (π·tanh applied here)
        D: (H,) or None; z: (B, L, H, P) or None (output gate silu(z))
    Returns:
        y: (B, L, H, P) in v's dtype.
    """
    compute = torch.promote_types(torch.promote_types(v.dtype, q.dtype), torch.float32)
    out_dtype = v.dtype
    q, k, v = q.to(compute), k.to(compute), v.to(compute)
    adt, dt = adt.to(compute).transpose(1, 2), dt.to(compute).transpose(1, 2)  # (B, L, H)
    lam = torch.sigmoid(trap.to(compute)).transpose(1, 2)  # (B, L, H)
    theta = torch.cumsum(torch.tanh(angles.to(compute)) * math.pi * dt[..., None], dim=1)  # (B, L, H, R)
    q = q[:, :, None, :] + q_bias.to(compute)  # (B, L, H, N)
    k = k[:, :, None, :] + k_bias.to(compute)
    # The weight of x_t in the state at step t (λ_t DT_t), and what the next step adds ((1-λ) DT α).
    shifted = F.pad((dt * (1 - lam))[:, 1:], (0, 0, 0, 1))  # (B, L, H): (1 - λ_{t+1}) DT_{t+1}, 0 at the end
    scale = dt * lam + shifted
    qk_dot = (q * k).sum(-1)  # (B, L, H): the rotation leaves the same-step dot product unchanged
    q_rot, k_rot = rotate_pairs(q, theta), rotate_pairs(k, theta)
    y = gated_linear_attention(q_rot, k_rot * scale[..., None], v, adt, chunk_size=chunk_size)
    y = y - v * (shifted * qk_dot)[..., None]
    if D is not None:
        y = y + v * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    return y.to(out_dtype)


class Mamba3Reference(nn.Module):
    """Pure-PyTorch Mamba-3 SISO mixer with mamba_ssm.Mamba3's parameters, init and forward math.

    Matches mamba_ssm.Mamba3 with ngroups=1, rope_fraction=0.5, is_mimo=False, is_outproj_norm=False.
    Parameters are created in the same order with the same random draws (in_proj's init, then
    dt_bias's), so under one seed both modules start from the same weights.
    """

    backend = "reference"
    fused = False
    a_activation = "softplus"

    def __init__(
        self,
        d_model,
        d_state=128,
        expand=2,
        headdim=64,
        rope_fraction=0.5,
        dt_min=0.001,
        dt_max=0.1,
        dt_init_floor=1e-4,
        A_floor=1e-4,
        chunk_size=64,
        device=None,
        dtype=None,
    ):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.expand, self.headdim = d_model, d_state, expand, headdim
        self.chunk_size, self.A_floor = chunk_size, A_floor
        self.d_inner = int(expand * d_model)
        self.nheads = self.d_inner // headdim
        self.mimo_rank, self.num_bc_heads = 1, 1
        split = int(d_state * rope_fraction)
        split -= split % 2
        self.num_rope_angles = split // 2

        # in_proj output order, as mamba-ssm: [z, x, B, C, dd_dt, dd_A, trap, angles]
        d_in_proj = 2 * self.d_inner + 2 * d_state + 3 * self.nheads + self.num_rope_angles
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False, **factory_kwargs)
        dt = torch.exp(
            torch.rand(self.nheads, device=device, dtype=torch.float32) * (math.log(dt_max) - math.log(dt_min))
            + math.log(dt_min)
        )
        dt = torch.clamp(dt, min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.dt_bias._no_weight_decay = True
        self.B_bias = nn.Parameter(torch.ones(self.nheads, 1, d_state, dtype=torch.float32, device=device))
        self.C_bias = nn.Parameter(torch.ones(self.nheads, 1, d_state, dtype=torch.float32, device=device))
        self.B_norm = RMSNormGated(d_state, eps=1e-5, **factory_kwargs)
        self.C_norm = RMSNormGated(d_state, eps=1e-5, **factory_kwargs)
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory_kwargs)

    def decay_rate(self, dd_A: torch.Tensor) -> torch.Tensor:
        """A = -activation(dd_A), at most -A_floor (float32 at least)."""
        dd_A = dd_A.to(torch.promote_types(dd_A.dtype, torch.float32))
        positive = F.softplus(dd_A) if self.a_activation == "softplus" else heavy_tail_activation(dd_A)
        return torch.clamp(-positive, max=-self.A_floor)

    def forward(self, u):
        """u: (B, L, d_model) → (B, L, d_model)."""
        z, x, B, C, dd_dt, dd_A, trap, angles = torch.split(
            self.in_proj(u),
            [
                self.d_inner,
                self.d_inner,
                self.d_state,
                self.d_state,
                self.nheads,
                self.nheads,
                self.nheads,
                self.num_rope_angles,
            ],
            dim=-1,
        )
        A = self.decay_rate(dd_A)  # (B, L, H)
        DT = F.softplus(dd_dt.to(A.dtype) + self.dt_bias.to(A.dtype))
        angles = angles.unsqueeze(-2).expand(-1, -1, self.nheads, -1)  # (B, L, H, R)
        y = mamba3_siso_scan(
            self.C_norm(C),
            self.B_norm(B),
            rearrange(x, "b l (h p) -> b l h p", p=self.headdim),
            (A * DT).transpose(1, 2),
            DT.transpose(1, 2),
            trap.transpose(1, 2),
            self.C_bias[:, 0],
            self.B_bias[:, 0],
            angles,
            D=self.D,
            z=rearrange(z, "b l (h p) -> b l h p", p=self.headdim),
            chunk_size=self.chunk_size,
        )
        return self.out_proj(rearrange(y, "b l h p -> b l (h p)").to(u.dtype))


def _validate(d_model, d_state, expand, headdim, chunk_size):
    for name, value in (
        ("d_model", d_model),
        ("d_state", d_state),
        ("expand", expand),
        ("headdim", headdim),
        ("chunk_size", chunk_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"Mamba3: {name} must be an integer >= 1, got {value!r}")
    if (expand * d_model) % headdim:
        raise ConfigError(f"Mamba3: expand*d_model = {expand * d_model} must be divisible by headdim={headdim}")
    if d_state < 4:
        raise ConfigError(f"Mamba3: d_state must be >= 4 (its rotary angles take a quarter of it), got {d_state}")


def Mamba3(d_model, d_state=64, expand=2, headdim=64, chunk_size=64, backend="auto") -> nn.Module:
    """Build a Mamba-3 SISO mixer, (B, L, d_model) → (B, L, d_model), on the resolved backend.

    The kernels module is mamba_ssm.Mamba3 itself; the returned module's `backend` says which runs.
    Built on the CPU in float32: move it with .to(device).
    """
    _validate(d_model, d_state, expand, headdim, chunk_size)
    kwargs = dict(d_model=d_model, d_state=d_state, expand=expand, headdim=headdim, chunk_size=chunk_size)
    if resolve_backend(backend, mixer="mamba3") == "reference":
        return Mamba3Reference(**kwargs)
    from mamba_ssm.modules import mamba3 as kernel_mamba3

    module = kernel_mamba3.Mamba3(**kwargs)
    module.backend, module.fused = "kernels", False
    # Which decay activation this mamba-ssm uses, so a reference built from its checkpoint can match.
    module.a_activation = "heavy_tail" if hasattr(kernel_mamba3, "heavy_tail_activation") else "softplus"
    return module
