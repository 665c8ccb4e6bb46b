"""DeltaNet and Gated DeltaNet mixers: flash-linear-attention's kernels on GPU, a PyTorch scan elsewhere.

Unlike Mamba-1/2 (where the kernels backend is mamba-ssm's own module), this module owns every
projection on both backends and hands only the recurrence to the backend: flash-linear-attention's
`chunk_gated_delta_rule` / `chunk_delta_rule` with `kernels`, `linear_scan.delta_rule` with
`reference`. Parameter names and shapes are therefore identical on both backends (one checkpoint
runs on either), and follow fla.layers.GatedDeltaNet's (q_proj, k_proj, v_proj, a_proj, b_proj,
A_log, dt_bias, q/k/v_conv1d, g_proj, o_norm, o_proj).

Head layout on this project's axes: expand·d_model value channels in heads of `headdim` (as
Mamba-2's x), keys of d_state per head. A head's state is (d_state, headdim), so a layer keeps
expand·d_model·d_state floats, exactly a Mamba-2 layer's at the same d_state: the capacity plot
compares the two families at equal state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from align_mamba.core.backends import resolve_backend
from align_mamba.core.errors import ConfigError
from align_mamba.mixers.linear_scan import delta_rule
from align_mamba.mixers.mamba2 import RMSNormGated

# x / sqrt(sum x² + eps): the same l2 normalisation of q and k on both backends (computed here,
# not inside the kernel, so the two backends share it exactly).
L2_EPS = 1e-6


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x: (..., K) → unit vectors along K (computed in float32 at least)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return (xf * torch.rsqrt(xf.square().sum(-1, keepdim=True) + L2_EPS)).to(x.dtype)


def causal_depthwise_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """silu(causal depthwise conv) over time: x (B, L, D) → (B, L, D), as fla's ShortConvolution."""
    seqlen = x.shape[1]
    return F.silu(conv(x.transpose(1, 2))[..., :seqlen].transpose(1, 2))


class DeltaNetMixer(nn.Module):
    """(Gated) DeltaNet layer: (B, L, d_model) → (B, L, d_model).

    gated=True is Gated DeltaNet (Yang et al. 2024): per head and step a decay
    g_t = -exp(A_log)·softplus(a_proj(u)_t + dt_bias) multiplies the state before the delta update.
    gated=False is DeltaNet (no a_proj, A_log, dt_bias). Both: q, k, v through a causal depthwise
    conv and silu, q and k l2-normalised, β = sigmoid(b_proj(u)), output gated RMSNorm with
    silu(g_proj(u)) per head, then o_proj.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        headdim: int = 32,
        expand: int = 2,
        d_conv: int = 4,
        chunk_size: int = 64,
        gated: bool = True,
        backend: str = "reference",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.d_model, self.d_state, self.headdim, self.expand = d_model, d_state, headdim, expand
        self.d_conv, self.chunk_size, self.gated, self.backend = d_conv, chunk_size, gated, backend
        self.fused = False
        self.value_dim = expand * d_model
        self.nheads = self.value_dim // headdim
        self.key_dim = self.nheads * d_state
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        if gated:
            self.a_proj = nn.Linear(d_model, self.nheads, bias=False)
        self.b_proj = nn.Linear(d_model, self.nheads, bias=False)
        if gated:
            # fla's initialisation: A uniform in (0, 16], dt = softplus(dt_bias) log-uniform in [1e-3, 0.1].
            A = torch.empty(self.nheads, dtype=torch.float32).uniform_(0, 16)
            self.A_log = nn.Parameter(torch.log(A))
            self.A_log._no_weight_decay = True
            dt = torch.exp(torch.rand(self.nheads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt = torch.clamp(dt, min=1e-4)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
            self.dt_bias._no_weight_decay = True
        self.q_conv1d = nn.Conv1d(
            self.key_dim, self.key_dim, d_conv, groups=self.key_dim, padding=d_conv - 1, bias=False
        )
        self.k_conv1d = nn.Conv1d(
            self.key_dim, self.key_dim, d_conv, groups=self.key_dim, padding=d_conv - 1, bias=False
        )
        self.v_conv1d = nn.Conv1d(
            self.value_dim, self.value_dim, d_conv, groups=self.value_dim, padding=d_conv - 1, bias=False
        )
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.o_norm = RMSNormGated(headdim, eps=norm_eps, norm_before_gate=True)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def gates(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """β (B, L, H) in (0, 1) and the log-decay g (B, L, H) <= 0 (None for DeltaNet), in float32 at least."""
        compute = torch.promote_types(u.dtype, torch.float32)
        beta = torch.sigmoid(self.b_proj(u).to(compute))
        if not self.gated:
            return beta, None
        g = -torch.exp(self.A_log.to(compute)) * F.softplus(self.a_proj(u).to(compute) + self.dt_bias.to(compute))
        return beta, g

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (B, L, d_model) → (B, L, d_model)."""
        q = l2_normalize(
            rearrange(causal_depthwise_conv(self.q_conv1d, self.q_proj(u)), "b l (h k) -> b l h k", k=self.d_state)
        )  # (B, L, H, K)
        k = l2_normalize(
            rearrange(causal_depthwise_conv(self.k_conv1d, self.k_proj(u)), "b l (h k) -> b l h k", k=self.d_state)
        )
        v = rearrange(causal_depthwise_conv(self.v_conv1d, self.v_proj(u)), "b l (h v) -> b l h v", v=self.headdim)
        beta, g = self.gates(u)
        o = self._recurrence(q, k, v, beta, g)  # (B, L, H, V)
        gate = rearrange(self.g_proj(u), "b l (h v) -> b l h v", v=self.headdim)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b l h v -> b l (h v)"))

    def _recurrence(self, q, k, v, beta, g):
        scale = self.d_state**-0.5
        if self.backend != "kernels":
            return delta_rule(q, k, v, beta, g, scale=scale, chunk_size=self.chunk_size)
        # The kernels take q, k, v in one dtype, β in it too, and g (log space) in float32.
        beta = beta.to(v.dtype)
        if not self.gated and v.dtype != torch.float32:
            from fla.ops.delta_rule import chunk_delta_rule

            o, _ = chunk_delta_rule(
                q=q, k=k, v=v, beta=beta, scale=scale, output_final_state=False, use_qk_l2norm_in_kernel=False
            )
            return o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        # fla's chunk_delta_rule refuses float32 inputs; DeltaNet is the gated rule with g = 0, which
        # the gated kernel runs in float32 (training's bf16 autocast takes the dedicated kernel above).
        g = g.float() if g is not None else q.new_zeros(q.shape[:3], dtype=torch.float32)
        o, _ = chunk_gated_delta_rule(
            q=q, k=k, v=v, g=g, beta=beta, scale=scale, output_final_state=False, use_qk_l2norm_in_kernel=False
        )
        return o


def _validate(name, d_model, d_state, headdim, expand, d_conv, chunk_size):
    for key, value in (
        ("d_model", d_model),
        ("d_state", d_state),
        ("headdim", headdim),
        ("expand", expand),
        ("d_conv", d_conv),
        ("chunk_size", chunk_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name}: {key} must be an integer >= 1, got {value!r}")
    if (expand * d_model) % headdim:
        raise ConfigError(f"{name}: expand*d_model = {expand * d_model} must be divisible by headdim={headdim}")


def _build(name: str, gated: bool, d_model, d_state, headdim, expand, d_conv, chunk_size, backend) -> DeltaNetMixer:
    _validate(name, d_model, d_state, headdim, expand, d_conv, chunk_size)
    mixer = "gated_deltanet" if gated else "deltanet"
    resolved = resolve_backend(backend, mixer=mixer)
    return DeltaNetMixer(d_model, d_state, headdim, expand, d_conv, chunk_size, gated=gated, backend=resolved)


def GatedDeltaNet(d_model, d_state=64, headdim=32, expand=2, d_conv=4, chunk_size=64, backend="auto") -> DeltaNetMixer:
    """A Gated DeltaNet mixer on the resolved backend ("auto", "kernels" or "reference")."""
    return _build("GatedDeltaNet", True, d_model, d_state, headdim, expand, d_conv, chunk_size, backend)


def DeltaNet(d_model, d_state=64, headdim=32, expand=2, d_conv=4, chunk_size=64, backend="auto") -> DeltaNetMixer:
    """A DeltaNet mixer (no decay gate) on the resolved backend."""
    return _build("DeltaNet", False, d_model, d_state, headdim, expand, d_conv, chunk_size, backend)
