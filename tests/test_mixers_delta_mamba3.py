"""The pure-PyTorch references of the new mixers against independent float64 step-by-step recurrences.

The chunked scans (linear_scan.delta_rule, gated_linear_attention, mamba3's scan) are checked
against loops written here, one time step at a time, straight from each model's recurrence; the
Polar-Mem-Mamba pieces against hand-computed examples.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align_mamba.mixers.delta import DeltaNetMixer, causal_depthwise_conv, l2_normalize
from align_mamba.mixers.linear_scan import delta_rule, gated_linear_attention
from align_mamba.mixers.mamba3 import Mamba3Reference
from align_mamba.mixers.polar import MemoryPool, unit_decay_path, zero_decay_path

F64 = torch.float64
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}

SCAN_SHAPES = [  # batch, seqlen, heads, K, V, chunk_size
    pytest.param((1, 1, 1, 2, 3, 4), id="one-step"),
    pytest.param((2, 13, 3, 4, 5, 4), id="ragged-chunks"),
    pytest.param((2, 16, 2, 8, 4, 16), id="one-chunk"),
    pytest.param((1, 21, 2, 3, 2, 64), id="chunk-past-L"),
]


def sequential_delta(q, k, v, beta, g, scale, S):
    """S_t = exp(g_t) S_{t-1}; S_t += k_t β_t (v_t - S_tᵀ k_t)ᵀ; o_t = scale · S_tᵀ q_t. S: (B, H, K, V)."""
    out = []
    for t in range(q.shape[1]):
        if g is not None:
            S = S * g[:, t].exp()[..., None, None]
        old = torch.einsum("bhk,bhkv->bhv", k[:, t], S)
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, t], beta[:, t, :, None] * (v[:, t] - old))
        out.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(out, dim=1), S


def _inputs(shape, dtype, seed=0):
    batch, seqlen, heads, K, V, _ = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seqlen, heads, K, generator=gen, dtype=F64)
    k = F.normalize(torch.randn(batch, seqlen, heads, K, generator=gen, dtype=F64), dim=-1)
    v = torch.randn(batch, seqlen, heads, V, generator=gen, dtype=F64)
    beta = torch.rand(batch, seqlen, heads, generator=gen, dtype=F64)
    g = -torch.rand(batch, seqlen, heads, generator=gen, dtype=F64)
    S0 = torch.randn(batch, heads, K, V, generator=gen, dtype=F64)
    return [t.to(dtype) for t in (q, k, v, beta, g, S0)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gated", [True, False], ids=["gated", "plain"])
@pytest.mark.parametrize("shape", SCAN_SHAPES)
def test_delta_rule_matches_the_sequential_recurrence(shape, gated, dtype):
    q, k, v, beta, g, S0 = _inputs(shape, dtype)
    g = g if gated else None
    scale = shape[3] ** -0.5
    o, S = delta_rule(q, k, v, beta, g, chunk_size=shape[-1], initial_state=S0, return_final_state=True)
    o_ref, S_ref = sequential_delta(
        *(t.to(F64) if t is not None else None for t in (q, k, v, beta, g)), scale, S0.to(F64)
    )
    assert o.dtype == dtype
    torch.testing.assert_close(o.to(F64), o_ref, **TOL[dtype])
    torch.testing.assert_close(S.to(F64), S_ref, **TOL[dtype])


def test_delta_rule_gradients_match_the_sequential_recurrence():
    q, k, v, beta, g, _ = (t.requires_grad_() for t in _inputs(SCAN_SHAPES[1].values[0], F64))
    grads = []
    for fn in (
        lambda: delta_rule(q, k, v, beta, g, chunk_size=4),
        lambda: sequential_delta(q, k, v, beta, g, q.shape[-1] ** -0.5, q.new_zeros(2, 3, 4, 5))[0],
    ):
        out = fn()
        grads.append(
            torch.autograd.grad(
                (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view_as(out)).sum(), (q, k, v, beta, g)
            )
        )
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SCAN_SHAPES)
def test_gated_linear_attention_matches_the_sequential_recurrence(shape, dtype):
    q, k, v, _, g, S0 = _inputs(shape, dtype)
    o, S = gated_linear_attention(q, k, v, g, chunk_size=shape[-1], initial_state=S0, return_final_state=True)
    S_ref, outs = S0.to(F64), []
    for t in range(q.shape[1]):
        S_ref = S_ref * g[:, t].to(F64).exp()[..., None, None] + torch.einsum(
            "bhk,bhv->bhkv", k[:, t].to(F64), v[:, t].to(F64)
        )
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t].to(F64), S_ref))
    torch.testing.assert_close(o.to(F64), torch.stack(outs, dim=1), **TOL[dtype])
    torch.testing.assert_close(S.to(F64), S_ref, **TOL[dtype])


# --- whole mixers ---------------------------------------------------------------------------------------

MIXER_SHAPES = [  # batch, seqlen, d_model, d_state, headdim, chunk_size
    pytest.param((2, 11, 16, 8, 8, 4), id="ragged"),
    pytest.param((1, 9, 32, 4, 16, 64), id="one-chunk"),
]


def _u(batch, seqlen, d_model, dtype):
    return torch.randn(batch, seqlen, d_model, generator=torch.Generator().manual_seed(3), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gated", [True, False], ids=["gated_deltanet", "deltanet"])
@pytest.mark.parametrize("shape", MIXER_SHAPES)
def test_deltanet_mixer_matches_a_step_by_step_layer(shape, gated, dtype):
    batch, seqlen, d_model, d_state, headdim, chunk_size = shape
    torch.manual_seed(0)
    m = DeltaNetMixer(d_model, d_state, headdim, chunk_size=chunk_size, gated=gated).to(dtype)
    with torch.no_grad():  # A_log spread so the decays differ between heads
        if gated:
            m.A_log.copy_(torch.linspace(-1, 1, m.nheads))
    u = _u(batch, seqlen, d_model, dtype)
    with torch.no_grad():
        out = m(u)
        # The layer by hand, in float64: projections, conv, gates, then one step at a time.
        m64, u64 = m.to(F64), u.to(F64)
        heads = lambda x, d: x.unflatten(-1, (-1, d))  # noqa: E731
        q = l2_normalize(heads(causal_depthwise_conv(m64.q_conv1d, m64.q_proj(u64)), d_state))
        k = l2_normalize(heads(causal_depthwise_conv(m64.k_conv1d, m64.k_proj(u64)), d_state))
        v = heads(causal_depthwise_conv(m64.v_conv1d, m64.v_proj(u64)), headdim)
        beta = torch.sigmoid(m64.b_proj(u64))
        g = -m64.A_log.exp() * F.softplus(m64.a_proj(u64) + m64.dt_bias) if gated else None
        o, _ = sequential_delta(q, k, v, beta, g, d_state**-0.5, u64.new_zeros(batch, m.nheads, d_state, headdim))
        gate = heads(m64.g_proj(u64), headdim)
        o = o * torch.rsqrt(o.square().mean(-1, keepdim=True) + 1e-5) * m64.o_norm.weight * F.silu(gate)
        expected = m64.o_proj(o.flatten(-2))
    torch.testing.assert_close(out.to(F64), expected, **TOL[dtype])


def rotate(x, theta):
    """Rotate pairs (2i, 2i+1) of x (..., N) by theta (..., R), one pair at a time."""
    x = x.clone()
    for i in range(theta.shape[-1]):
        a, b = x[..., 2 * i].clone(), x[..., 2 * i + 1].clone()
        c, s = theta[..., i].cos(), theta[..., i].sin()
        x[..., 2 * i], x[..., 2 * i + 1] = a * c - b * s, a * s + b * c
    return x


def mamba3_by_steps(m: Mamba3Reference, u: torch.Tensor) -> torch.Tensor:
    """Mamba-3 SISO as its recurrent form, one step at a time (mamba-ssm's mamba3_siso_step_ref):
    h_t = α_t h_{t-1} + (1-λ_t) DT_t α_t k_{t-1} x_{t-1}ᵀ + λ_t DT_t k_t x_tᵀ,  y_t = h_tᵀ q_t + D x_t."""
    H, P, N, R = m.nheads, m.headdim, m.d_state, m.num_rope_angles
    z, x, B, C, dd_dt, dd_A, trap, angles = torch.split(m.in_proj(u), [m.d_inner, m.d_inner, N, N, H, H, H, R], -1)
    batch, seqlen, _ = u.shape
    rms = lambda t, w: t * torch.rsqrt(t.square().mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    B, C = rms(B, m.B_norm.weight), rms(C, m.C_norm.weight)
    x, z = x.unflatten(-1, (H, P)), z.unflatten(-1, (H, P))
    h = u.new_zeros(batch, H, N, P)
    theta = u.new_zeros(batch, H, R)
    k_prev, x_prev = u.new_zeros(batch, H, N), u.new_zeros(batch, H, P)
    ys = []
    for t in range(seqlen):
        A = torch.clamp(-F.softplus(dd_A[:, t]), max=-m.A_floor)  # (B, H)
        dt = F.softplus(dd_dt[:, t] + m.dt_bias)
        lam = torch.sigmoid(trap[:, t])
        theta = theta + torch.tanh(angles[:, t])[:, None, :] * math.pi * dt[..., None]
        q = rotate(C[:, t, None, :] + m.C_bias[:, 0], theta)  # (B, H, N)
        k = rotate(B[:, t, None, :] + m.B_bias[:, 0], theta)
        alpha = torch.exp(A * dt)[..., None, None]
        h = (
            alpha * h
            + ((1 - lam) * dt)[..., None, None] * alpha * k_prev[..., None] * x_prev[:, :, None, :]
            + (lam * dt)[..., None, None] * k[..., None] * x[:, t, :, None, :]
        )
        y = torch.einsum("bhnp,bhn->bhp", h, q) + m.D[:, None] * x[:, t]
        ys.append(y * F.silu(z[:, t]))
        k_prev, x_prev = k, x[:, t]
    return m.out_proj(torch.stack(ys, dim=1).flatten(-2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", MIXER_SHAPES)
def test_mamba3_reference_matches_its_recurrent_form(shape, dtype):
    batch, seqlen, d_model, d_state, headdim, chunk_size = shape
    torch.manual_seed(0)
    m = Mamba3Reference(d_model, d_state, headdim=headdim, chunk_size=chunk_size).to(dtype)
    with torch.no_grad():  # biases off their all-ones init so every term of the recurrence matters
        for p in (m.B_bias, m.C_bias, m.B_norm.weight, m.C_norm.weight, m.D):
            p.add_(0.3 * torch.randn(p.shape, dtype=dtype))
    u = _u(batch, seqlen, d_model, dtype)
    with torch.no_grad():
        out = m(u)
        expected = mamba3_by_steps(m.to(F64), u.to(F64))
    torch.testing.assert_close(out.to(F64), expected, **TOL[dtype])


def test_mamba3_reference_has_mamba_ssm_parameter_names_and_shapes():
    m = Mamba3Reference(32, 16, expand=2, headdim=16)
    shapes = {name: tuple(p.shape) for name, p in m.state_dict().items()}
    # mamba_ssm.Mamba3(32, d_state=16, headdim=16): in_proj [z, x, B, C, dt, A, trap, angles]
    assert shapes == {
        "in_proj.weight": (2 * 64 + 2 * 16 + 3 * 4 + 4, 32),
        "dt_bias": (4,),
        "B_bias": (4, 1, 16),
        "C_bias": (4, 1, 16),
        "B_norm.weight": (16,),
        "C_norm.weight": (16,),
        "D": (4,),
        "out_proj.weight": (32, 64),
    }


# --- Polar-Mem-Mamba ------------------------------------------------------------------------------------


def _identity(d):
    proj = torch.nn.Linear(d, d, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(d))
    return proj


def test_a0_channel_keeps_only_the_current_token():
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])
    torch.testing.assert_close(zero_decay_path(_identity(2), x), x)  # h_t = 0·h_{t-1} + x_t


def test_a1_channel_is_a_running_sum():
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])
    # h_1 = x_1, h_2 = h_1 + x_2, h_3 = h_2 + x_3
    expected = torch.tensor([[[1.0, 2.0], [4.0, 1.0], [4.5, 1.5]]])
    torch.testing.assert_close(unit_decay_path(_identity(2), x), expected)


def test_memory_pool_keeps_the_top_priorities_across_pool_and_candidates():
    values = torch.tensor([[[1.0], [2.0]]])  # pool of 2, summaries of 1
    priorities = torch.tensor([[0.5, -1.0]])
    new_values = torch.tensor([[[10.0], [20.0], [30.0]]])
    new_priorities = torch.tensor([[2.0, 0.0, 0.7]])
    kept, kept_priorities = MemoryPool.select(values, priorities, new_values, new_priorities, keep=2)
    # priorities 0.5, -1 | 2.0, 0.0, 0.7 → the two best are 2.0 (candidate 0) and 0.7 (candidate 2)
    torch.testing.assert_close(kept, torch.tensor([[[10.0], [30.0]]]))
    torch.testing.assert_close(kept_priorities, torch.tensor([[2.0, 0.7]]))


def test_memory_pool_write_scores_tokens_and_replaces_the_weakest_entry():
    pool = MemoryPool(d_model=2, pool_size=2, summary_dim=1)
    with torch.no_grad():
        pool.initial.copy_(torch.tensor([[1.0], [2.0]]))
        pool.priority.copy_(torch.tensor([1.0, -2.0]))
        pool.score_proj.weight.copy_(torch.tensor([[1.0, 0.0]]))  # score = first channel
        pool.score_proj.bias.zero_()
        pool.write_proj.weight.copy_(torch.tensor([[0.0, 1.0]]))  # summary = second channel
    y = torch.tensor([[[0.0, 5.0], [3.0, 7.0]]])  # scores 0 and 3
    values, priorities = pool.write(pool.empty(1), y)
    sig = torch.sigmoid
    # entries: initial 1 (priority 1), initial 2 (-2), token 0 (0), token 1 (3) → keep token 1, initial 1
    torch.testing.assert_close(priorities, torch.tensor([[3.0, 1.0]]))
    torch.testing.assert_close(
        values, torch.stack([sig(torch.tensor(3.0)) * 7.0, sig(torch.tensor(1.0)) * 1.0]).view(1, 2, 1)
    )
