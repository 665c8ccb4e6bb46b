"""Mamba-1 mixer: mamba-ssm's kernels where they run, a pure-PyTorch twin everywhere else.

`Mamba(...)` is a factory like `Mamba2(...)` (see mamba2.py): the `kernels` backend returns a genuine
`mamba_ssm.Mamba` and `reference` returns `MambaReference`, which has the same parameter names,
shapes, initialisation and forward math (mamba-ssm's slow path), so checkpoints move between them.
mamba_ssm.Mamba needs mamba-ssm's compiled selective scan (selective_scan_cuda), which a
Triton-only install of mamba-ssm lacks: "auto" then falls back to the reference with a warning.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, repeat

from align_mamba.core.backends import kernel_module, resolve_backend
from align_mamba.core.errors import ConfigError
from align_mamba.mixers.ssd import selective_scan


class MambaReference(nn.Module):
    """Pure-PyTorch Mamba-1 mixer with mamba_ssm.Mamba's parameters, init and forward math.

    Matches mamba_ssm.Mamba with dt_rank="auto" (ceil(d_model / 16)), dt_init="random",
    dt_scale=1, conv_bias=True, bias=False. Parameters are created in the same order with the same
    random draws, so under one seed both modules start from the same weights.
    """

    backend = "reference"
    fused = False

    def __init__(
        self,
        d_model,
        d_state=16,
        d_conv=4,
        expand=2,
        dt_min=0.001,
        dt_max=0.1,
        dt_init_floor=1e-4,
        device=None,
        dtype=None,
    ):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False, **factory_kwargs)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True, **factory_kwargs
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory_kwargs)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs)

        # dt_proj keeps the variance of dt at init; its bias makes softplus(bias) log-uniform in
        # [dt_min, dt_max], stored as the inverse softplus.
        dt_init_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(
            torch.rand(self.d_inner, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True  # model-level init that zeroes Linear biases must skip it

        # S4D-real init: A[d, n] = -(n + 1), kept in float32 as log.
        A = repeat(torch.arange(1, d_state + 1, dtype=torch.float32, device=device), "n -> d n", d=self.d_inner)
        self.A_log = nn.Parameter(torch.log(A).contiguous())
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False, **factory_kwargs)

    def forward(self, hidden_states, initial_state=None, return_final_state=False):
        """hidden_states: (B, L, d_model) -> (B, L, d_model).

        initial_state / return_final_state carry the SSM state (B, d_inner, d_state) only; the
        convolution restarts from zeros, so chaining two calls does not reproduce one
        call over the joined sequence (that would need the last d_conv - 1 conv inputs too).
        """
        seqlen = hidden_states.shape[1]
        xz = rearrange(self.in_proj(hidden_states), "b l d -> b d l")  # (B, 2*d_inner, L)
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :seqlen])  # causal: keep the first L of L + d_conv - 1 outputs
        x_dbl = self.x_proj(rearrange(x, "b d l -> b l d"))  # (B, L, dt_rank + 2*d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's bias is added inside the scan (in float32), like mamba-ssm's kernels do.
        dt = rearrange(dt @ self.dt_proj.weight.t(), "b l d -> b d l")  # (B, d_inner, L)
        compute = torch.promote_types(x.dtype, torch.float32)
        A = -torch.exp(self.A_log.to(compute))  # (d_inner, d_state)
        y = selective_scan(
            x,
            dt,
            A,
            rearrange(B, "b l n -> b n l"),
            rearrange(C, "b l n -> b n l"),
            self.D.to(compute),
            z=z,
            delta_bias=self.dt_proj.bias.to(compute),
            delta_softplus=True,
            return_last_state=return_final_state,
            initial_state=initial_state,
        )
        if return_final_state:
            y, final_state = y
        out = self.out_proj(rearrange(y, "b d l -> b l d"))
        return (out, final_state) if return_final_state else out

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None, **kwargs):
        """Zeroed decode states with mamba_ssm.Mamba's signature, shapes and dtypes.

        conv_state (B, d_inner, d_conv), ssm_state (B, d_inner, d_state); max_seqlen is unused.
        """
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_dtype = self.dt_proj.weight.dtype if dtype is None else dtype
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def step(self, hidden_states, conv_state, ssm_state):
        """One decode step, as mamba_ssm.Mamba.step: (B, 1, d_model) -> ((B, 1, d_model), conv_state, ssm_state).

        conv_state (B, d_inner, d_conv) and ssm_state (B, d_inner, d_state) are updated in place.
        From zeroed states, step t returns position t of forward() over the same tokens.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1:
            raise ConfigError(
                f"Mamba step decodes one token at a time: expected (B, 1, d_model), got {tuple(hidden_states.shape)}"
            )
        dtype = hidden_states.dtype
        x, z = self.in_proj(hidden_states.squeeze(1)).chunk(2, dim=-1)  # (B, d_inner) each
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = x
        x = (conv_state * rearrange(self.conv1d.weight, "d 1 w -> d w")).sum(-1) + self.conv1d.bias
        x = F.silu(x).to(dtype)  # (B, d_inner)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        compute = torch.promote_types(dtype, torch.float32)
        # dt_proj's bias enters in float32, inside the softplus, as in forward() and the kernels
        dt = F.softplus((dt @ self.dt_proj.weight.t()).to(compute) + self.dt_proj.bias.to(compute))  # (B, d_inner)
        A = -torch.exp(self.A_log.to(compute))  # (d_inner, d_state)
        x = x.to(compute)
        state = ssm_state.to(compute) * torch.exp(dt[..., None] * A) + (dt * x)[..., None] * B.to(compute)[:, None, :]
        ssm_state.copy_(state)  # (B, d_inner, d_state)
        y = torch.einsum("bdn,bn->bd", state, C.to(compute)) + self.D.to(compute) * x
        y = y * F.silu(z.to(compute))
        return self.out_proj(y.to(dtype)).unsqueeze(1), conv_state, ssm_state


def _validate(d_model, d_state, d_conv, expand):
    """Raise ConfigError, one line naming the parameter, for a Mamba-1 config that cannot be built."""
    for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"Mamba: {name} must be an integer >= 1, got {value!r}")


def Mamba(d_model, d_state=16, d_conv=4, expand=2, backend="auto") -> nn.Module:
    """Build a Mamba-1 mixer, (B, L, d_model) -> (B, L, d_model), on the resolved backend.

    backend: "auto", "kernels" or "reference", as for Mamba2. "kernels" also needs mamba-ssm's
    compiled selective_scan_cuda: asked for explicitly without it, this raises
    BackendUnavailableError; under "auto" it falls back to the reference and logs a warning.
    The kernels module runs mamba-ssm's fused mamba_inner_fn when causal-conv1d is installed
    (`fused` attribute) and its selective_scan_fn path otherwise. Built on the CPU in float32.
    """
    _validate(d_model, d_state, d_conv, expand)
    kwargs = dict(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    resolved = resolve_backend(backend, mixer="mamba1")
    if resolved == "reference":
        return MambaReference(**kwargs)
    from mamba_ssm.modules.mamba_simple import Mamba as KernelMamba

    # use_fast_path=True: mamba_inner_fn when causal-conv1d is installed, selective_scan_fn otherwise
    return kernel_module("Mamba", lambda fused, **kw: KernelMamba(**kw, use_fast_path=True), **kwargs)
