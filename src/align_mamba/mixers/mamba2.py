"""Mamba-2 mixer: mamba-ssm's kernels where they run, a pure-PyTorch twin everywhere else.

`Mamba2(...)` is a factory, not a class: with the `kernels` backend it returns a genuine
`mamba_ssm.Mamba2`, so GPU runs use exactly the published implementation (fused Triton kernels);
with `reference` it returns `Mamba2Reference`, which has the same parameter names, shapes and
initialisation, and computes the same function in plain PyTorch (CPU, float64, any device).
Because both have identical state_dict keys and shapes, a checkpoint trained on one backend loads
into the other, and tests can compare the two on the same weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from align_mamba.core.backends import kernel_module, resolve_backend
from align_mamba.core.errors import ConfigError
from align_mamba.mixers.ssd import ssd_chunked
from align_mamba.mixers.ssd_scan import ssd_scan


class RMSNormGated(nn.Module):
    """mamba-ssm's gated RMSNorm (ops/triton/layernorm_gated.RMSNorm), in plain PyTorch.

    With norm_before_gate=False (Mamba-2's setting): out = rmsnorm(x * silu(z)) * weight, where the
    mean square is taken over each group of `group_size` channels. Computed in float32 at least.
    """

    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=True, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)  # mamba-ssm's has none either: same state_dict
        self.group_size = hidden_size if group_size is None else group_size
        self.norm_before_gate = norm_before_gate

    def forward(self, x, z=None):
        """x, z: (..., hidden_size) -> (..., hidden_size) in x's dtype."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        out = x.to(dtype)
        if z is not None and not self.norm_before_gate:
            out = out * F.silu(z.to(dtype))
        groups = rearrange(out, "... (g d) -> ... g d", d=self.group_size)
        rstd = torch.rsqrt(groups.square().mean(dim=-1, keepdim=True) + self.eps)
        out = rearrange(groups * rstd, "... g d -> ... (g d)") * self.weight.to(dtype)
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.to(dtype))
        return out.to(x.dtype)


class Mamba2Reference(nn.Module):
    """Pure-PyTorch Mamba-2 mixer with mamba_ssm.Mamba2's parameters, init and forward math.

    Matches mamba_ssm.Mamba2 with its defaults rmsnorm=True, norm_before_gate=False, D_has_hdim=False,
    bias=False, conv_bias=True, d_ssm=d_inner, dt_limit=(0, inf). Parameters are created in the same
    order with the same random draws, so under one seed both modules start from the same weights.
    """

    backend = "reference"
    fused = False
    # None: the chunked SSD (ssd_chunked, mamba-ssm's ssd_minimal). An int: the same recurrence carried
    # block by block (ssd_scan.ssd_scan, that many steps per block), linear in L: the CPU inference path.
    scan_block: int | None = None

    def __init__(
        self,
        d_model,
        d_state=64,
        d_conv=4,
        expand=2,
        headdim=64,
        ngroups=1,
        chunk_size=256,
        A_init_range=(1, 16),
        dt_min=0.001,
        dt_max=0.1,
        dt_init_floor=1e-4,
        device=None,
        dtype=None,
    ):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.d_inner = expand * d_model
        self.nheads = self.d_inner // headdim
        self.conv_dim = self.d_inner + 2 * ngroups * d_state

        # in_proj output order, as mamba-ssm: [z, x, B, C, dt]
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=False, **factory_kwargs)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1, bias=True, **factory_kwargs
        )

        # dt = softplus(dt_bias) starts log-uniform in [dt_min, dt_max]; store its inverse softplus.
        dt = torch.exp(
            torch.rand(self.nheads, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = torch.clamp(dt, min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.dt_bias._no_weight_decay = True

        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.nheads, device=device))
        self.D._no_weight_decay = True

        self.norm = RMSNormGated(
            self.d_inner, eps=1e-5, norm_before_gate=False, group_size=self.d_inner // ngroups, **factory_kwargs
        )
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory_kwargs)

    def forward(self, u, initial_state=None, return_final_state=False):
        """u: (B, L, d_model) -> (B, L, d_model).

        initial_state / return_final_state carry the SSM state (B, nheads, headdim, d_state) only;
        the convolution restarts from zeros, so chaining two calls does not reproduce one
        call over the joined sequence (that would need the last d_conv - 1 conv inputs too).
        """
        zxbcdt = self.in_proj(u)  # (B, L, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC = F.silu(self._causal_conv(xBC))  # (B, L, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        compute = torch.promote_types(dt.dtype, torch.float32)
        # dt in float32 before softplus, and A from float A_log (in fp16, exp could overflow to -inf).
        dt = F.softplus(dt.to(compute) + self.dt_bias.to(compute))  # (B, L, H)
        A = -torch.exp(self.A_log.to(compute))  # (H,)
        scan, block = (ssd_chunked, self.chunk_size) if self.scan_block is None else (ssd_scan, self.scan_block)
        y = scan(
            rearrange(x, "b l (h p) -> b l h p", p=self.headdim),
            dt,
            A,
            rearrange(B, "b l (g n) -> b l g n", g=self.ngroups),
            rearrange(C, "b l (g n) -> b l g n", g=self.ngroups),
            block,
            D=self.D,
            initial_state=initial_state,
            return_final_state=return_final_state,
        )
        if return_final_state:
            y, final_state = y
        y = self.norm(rearrange(y, "b l h p -> b l (h p)"), z)  # (B, L, d_inner)
        out = self.out_proj(y)
        return (out, final_state) if return_final_state else out

    def _causal_conv(self, xBC):
        """self.conv1d as a causal conv (padding d_conv-1 on both sides, the first L outputs kept):
        (B, L, conv_dim) -> (B, L, conv_dim), out_t = bias + sum_k w_k x_{t-(d_conv-1)+k}.

        Written as d_conv shifted multiply-adds in the (B, L, C) layout: on the CPU, nn.Conv1d's
        depthwise backward, the transposes around it and silu's backward on the transposed view
        took about 10% more of a small training step. Summed in float32 at least (as the conv
        accumulates), returned in xBC's dtype (as the conv under autocast).
        """
        seqlen = xBC.shape[1]
        dtype = torch.promote_types(xBC.dtype, torch.float32)
        padded = F.pad(xBC.to(dtype), (0, 0, self.d_conv - 1, 0))  # (B, d_conv-1 + L, conv_dim), zeros before t=0
        weight = rearrange(self.conv1d.weight.to(dtype), "d 1 w -> w d")  # (d_conv, conv_dim)
        out = self.conv1d.bias.to(dtype) + padded[:, :seqlen] * weight[0]
        for k in range(1, self.d_conv):
            out = out + padded[:, k : k + seqlen] * weight[k]
        return out.to(xBC.dtype)

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None, **kwargs):
        """Zeroed decode states with mamba_ssm.Mamba2's signature, shapes, layout and dtypes.

        conv_state (B, conv_dim, d_conv) is, as in mamba-ssm, a transposed view of a
        (B, d_conv, conv_dim) buffer; ssm_state is (B, nheads, headdim, d_state). max_seqlen is
        unused: the recurrent state does not grow with the context.
        """
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_conv, self.conv_dim, device=device, dtype=conv_dtype).transpose(
            1, 2
        )
        ssm_dtype = self.in_proj.weight.dtype if dtype is None else dtype
        ssm_state = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def step(self, hidden_states, conv_state, ssm_state):
        """One decode step, as mamba_ssm.Mamba2.step: (B, 1, d_model) -> ((B, 1, d_model), conv_state, ssm_state).

        conv_state (B, conv_dim, d_conv) holds the last d_conv conv inputs and ssm_state
        (B, nheads, headdim, d_state) the SSM state; both are updated in place. From zeroed states,
        step t returns position t of forward() over the same tokens (any ngroups).
        """
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1:
            raise ConfigError(
                f"Mamba2 step decodes one token at a time: expected (B, 1, d_model), got {tuple(hidden_states.shape)}"
            )
        dtype = hidden_states.dtype
        zxbcdt = self.in_proj(hidden_states.squeeze(1))  # (B, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = xBC
        xBC = (conv_state * rearrange(self.conv1d.weight, "d 1 w -> d w")).sum(-1) + self.conv1d.bias
        xBC = F.silu(xBC).to(dtype)  # (B, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        compute = torch.promote_types(dt.dtype, torch.float32)
        dt = F.softplus(dt.to(compute) + self.dt_bias.to(compute))  # (B, H)
        A = -torch.exp(self.A_log.to(compute))  # (H,)
        x = rearrange(x, "b (h p) -> b h p", p=self.headdim).to(compute)  # (B, H, P)
        heads_per_group = self.nheads // self.ngroups
        B, C = (
            rearrange(M, "b (g n) -> b g n", g=self.ngroups).repeat_interleave(heads_per_group, dim=1).to(compute)
            for M in (B, C)
        )  # (B, H, N) each
        decay = torch.exp(dt * A)[..., None, None]  # (B, H, 1, 1)
        state = ssm_state.to(compute) * decay + (dt[..., None] * x)[..., None] * B[:, :, None, :]  # (B, H, P, N)
        ssm_state.copy_(state)
        y = torch.einsum("bhpn,bhn->bhp", state, C) + self.D.to(compute)[:, None] * x  # (B, H, P)
        y = self.norm(rearrange(y, "b h p -> b (h p)").to(dtype), z)  # (B, d_inner)
        return self.out_proj(y).unsqueeze(1), conv_state, ssm_state


def _suggest_headdim(d_inner: int, headdim: int) -> int:
    """A head dimension dividing d_inner: 64, 32 or 16 if one fits under headdim, else the largest that does."""
    for candidate in (64, 32, 16):
        if candidate <= headdim and d_inner % candidate == 0:
            return candidate
    return max(d for d in range(1, min(headdim, d_inner) + 1) if d_inner % d == 0)


def _validate(d_model, d_state, d_conv, expand, headdim, ngroups, chunk_size):
    """Raise ConfigError, one line naming the parameter, for a Mamba-2 config that cannot be built."""
    for name, value in (
        ("d_model", d_model),
        ("d_state", d_state),
        ("d_conv", d_conv),
        ("expand", expand),
        ("headdim", headdim),
        ("ngroups", ngroups),
        ("chunk_size", chunk_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"Mamba2: {name} must be an integer >= 1, got {value!r}")
    d_inner = expand * d_model
    if d_inner % headdim != 0:
        raise ConfigError(
            f"Mamba2: expand*d_model = {expand}*{d_model} = {d_inner} must be divisible by headdim={headdim}; "
            f"use a headdim that divides {d_inner}, e.g. headdim={_suggest_headdim(d_inner, headdim)}"
        )
    nheads = d_inner // headdim
    if nheads % ngroups != 0:
        raise ConfigError(f"Mamba2: nheads = expand*d_model/headdim = {nheads} must be divisible by ngroups={ngroups}")


def Mamba2(d_model, d_state=64, d_conv=4, expand=2, headdim=64, ngroups=1, chunk_size=256, backend="auto") -> nn.Module:
    """Build a Mamba-2 mixer, (B, L, d_model) -> (B, L, d_model), on the resolved backend.

    backend: "auto" (kernels when CUDA and mamba-ssm are usable, else reference), "kernels", or
    "reference". The kernels module is mamba_ssm.Mamba2 itself, on the fused path
    (use_mem_eff_path) when causal-conv1d is installed; the returned module's `backend` attribute
    says which ran and `fused` whether the fused path is on. The module is built on the CPU in
    float32: move it with .to(device). Raises ConfigError for an invalid config or backend name,
    BackendUnavailableError for "kernels" where they cannot run.
    """
    _validate(d_model, d_state, d_conv, expand, headdim, ngroups, chunk_size)
    kwargs = dict(
        d_model=d_model,
        d_state=d_state,
        d_conv=d_conv,
        expand=expand,
        headdim=headdim,
        ngroups=ngroups,
        chunk_size=chunk_size,
    )
    if resolve_backend(backend) == "reference":
        return Mamba2Reference(**kwargs)
    from mamba_ssm.modules.mamba2 import Mamba2 as KernelMamba2

    return kernel_module("Mamba2", lambda fused, **kw: KernelMamba2(**kw, use_mem_eff_path=fused), **kwargs)
