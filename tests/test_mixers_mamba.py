"""CPU tests of the pure-PyTorch Mamba mixers: scans against plain recurrences, module wiring
against an independent step-by-step computation, causality, mamba-ssm's parameter layout, and
config errors. The comparison against mamba-ssm's kernels is in test_mixers_gpu.py."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

import align_mamba.core.backends as backends
from align_mamba.core.backends import mamba_ssm_status
from align_mamba.core.errors import BackendUnavailableError, ConfigError
from align_mamba.mixers.mamba1 import Mamba, MambaReference
from align_mamba.mixers.mamba2 import Mamba2, Mamba2Reference
from align_mamba.mixers.ssd import segsum_from_cumsum, selective_scan, ssd_chunked

f64 = torch.float64


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ---------------------------------------------------------------------------------------------
# Plain float64 recurrences, one time step at a time: the definitions the scans must equal.


def ssd_loop(x, dt, A, B, C, D=None, h0=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t. Head h uses group h // (H/G)."""
    batch, seqlen, nheads, headdim = x.shape
    rep = nheads // B.shape[2]
    Bh, Ch = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)  # (b, L, H, N)
    h = x.new_zeros(batch, nheads, headdim, B.shape[-1]) if h0 is None else h0
    ys = []
    for t in range(seqlen):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = decay * h + dt[:, t, :, None, None] * x[:, t, :, :, None] * Bh[:, t, :, None, :]
        y = (h * Ch[:, t, :, None, :]).sum(-1)
        if D is not None:
            y = y + D[:, None] * x[:, t]
        ys.append(y)
    return torch.stack(ys, dim=1), h


def selective_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Mamba-1: per channel d, h_t = exp(delta_t A_d) h_{t-1} + delta_t u_t B_t, y_t = C_t.h_t + D_d u_t."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, seqlen = u.shape

    def per_channel(M, t):  # (b, d, n) at step t, whatever the layout of M
        if M.dim() == 2:
            return M.expand(batch, dim, -1)
        if M.dim() == 3:
            return M[:, None, :, t].expand(batch, dim, -1)
        return M[..., t].repeat_interleave(dim // M.shape[1], dim=1)

    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(seqlen):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * per_channel(B, t)
        y = (h * per_channel(C, t)).sum(-1)
        if D is not None:
            y = y + D * u[:, :, t]
        ys.append(y)
    y = torch.stack(ys, dim=-1)
    return y * F.silu(z) if z is not None else y


def ssd_inputs(batch, seqlen, nheads, headdim, dstate, ngroups, dtype=f64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seqlen, nheads, headdim, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(batch, seqlen, nheads, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.randn(nheads, generator=g, dtype=dtype) * 0.5)
    B = torch.randn(batch, seqlen, ngroups, dstate, generator=g, dtype=dtype)
    C = torch.randn(batch, seqlen, ngroups, dstate, generator=g, dtype=dtype)
    D = torch.randn(nheads, generator=g, dtype=dtype)
    return x, dt, A, B, C, D


# ---------------------------------------------------------------------------------------------
# ssd_chunked


@pytest.mark.parametrize("seqlen", [1, 7, 64, 100])
@pytest.mark.parametrize("chunk_size", [4, 16, 64])
@pytest.mark.parametrize("nheads,headdim,dstate,ngroups", [(1, 3, 5, 1), (4, 8, 16, 2), (6, 4, 8, 2)])
def test_ssd_chunked_equals_recurrence_float64(seqlen, chunk_size, nheads, headdim, dstate, ngroups):
    x, dt, A, B, C, D = ssd_inputs(2, seqlen, nheads, headdim, dstate, ngroups)
    y, final = ssd_chunked(x, dt, A, B, C, chunk_size, D=D, return_final_state=True)
    y_ref, h_ref = ssd_loop(x, dt, A, B, C, D)
    assert y.shape == x.shape and y.dtype == f64
    assert rel_err(y, y_ref) < 1e-10
    assert rel_err(final, h_ref) < 1e-10


def test_ssd_chunked_initial_state_chains_two_halves():
    x, dt, A, B, C, D = ssd_inputs(2, 50, 4, 8, 6, 2)
    y_full, h_full = ssd_chunked(x, dt, A, B, C, 16, D=D, return_final_state=True)
    y1, h1 = ssd_chunked(x[:, :23], dt[:, :23], A, B[:, :23], C[:, :23], 16, D=D, return_final_state=True)
    y2, h2 = ssd_chunked(
        x[:, 23:], dt[:, 23:], A, B[:, 23:], C[:, 23:], 16, D=D, initial_state=h1, return_final_state=True
    )
    assert rel_err(torch.cat([y1, y2], dim=1), y_full) < 1e-12
    assert rel_err(h2, h_full) < 1e-12
    _, h_ref = ssd_loop(x[:, 23:], dt[:, 23:], A, B[:, 23:], C[:, 23:], D, h0=h1)
    assert rel_err(h2, h_ref) < 1e-10


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_ssd_chunked_low_precision_inputs(dtype, tol):
    x, dt, A, B, C, D = (t.to(dtype) for t in ssd_inputs(2, 100, 4, 16, 16, 2, dtype=torch.float32))
    y = ssd_chunked(x, dt, A, B, C, 32, D=D)
    # Compare against float64 on the same (rounded) inputs: only the scan's own error remains.
    y_ref, _ = ssd_loop(*(t.double() for t in (x, dt, A, B, C, D)))
    assert y.dtype == dtype
    assert rel_err(y, y_ref) < tol


def test_ssd_chunked_stable_under_strong_decay():
    # dt*A down to about -200 per step: exp of cumulative sums would overflow if differenced naively.
    x, dt, A, B, C, D = ssd_inputs(1, 64, 2, 4, 4, 1)
    dt = dt * 20
    A = A * 10
    for t in (x, dt, A, B, C):
        t.requires_grad_()
    y = ssd_chunked(x.float(), dt.float(), A.float(), B.float(), C.float(), 64)
    y.sum().backward()
    y_ref, _ = ssd_loop(x.detach(), dt.detach(), A.detach(), B.detach(), C.detach())
    assert rel_err(y, y_ref) < 1e-5
    assert all(torch.isfinite(t.grad).all() for t in (x, dt, A, B, C))


def decay_loop(dA):
    """exp(sum(dA[..., j+1 : i+1])) for j <= i, 0 above: the within-chunk decay matrix, entry by entry."""
    T = dA.shape[-1]
    zero = torch.zeros_like(dA[..., 0])
    rows = [
        torch.stack([torch.exp(dA[..., j + 1 : i + 1].sum(-1)) if j <= i else zero for j in range(T)], dim=-1)
        for i in range(T)
    ]
    return torch.stack(rows, dim=-2)


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 32, 64])
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-4), (f64, 1e-12)])
def test_segsum_from_cumsum_decay_equals_loop(chunk_size, dtype, rtol):
    # dA down to -5 per step (and 0 at every 5th, as on padded steps): the cumsums reach -5 * chunk_size,
    # so their differences cancel much more than the decays they leave.
    g = torch.Generator().manual_seed(chunk_size)
    dA = -5 * torch.rand(2, 3, chunk_size, generator=g, dtype=f64)
    dA[..., ::5] = 0
    dA_ref = dA.clone().requires_grad_()
    ref = decay_loop(dA_ref)  # (2, 3, T, T)
    dA_in = dA.to(dtype).requires_grad_()
    decay = torch.exp(segsum_from_cumsum(torch.cumsum(dA_in, dim=-1)))
    above = torch.triu(torch.ones(chunk_size, chunk_size, dtype=torch.bool), diagonal=1)
    assert decay.dtype == dtype and (decay[..., above] == 0).all()
    assert (torch.diagonal(decay, dim1=-2, dim2=-1) == 1).all()
    # float32 keeps relative precision only above its smallest normals (about 1e-38)
    atol = 1e-30 if dtype == torch.float32 else 0.0
    torch.testing.assert_close(decay.double(), ref, rtol=rtol, atol=atol)
    weights = torch.randn(ref.shape, generator=g, dtype=f64)
    (decay.double() * weights).sum().backward()
    (ref * weights).sum().backward()
    assert torch.isfinite(dA_in.grad).all()
    scale = dA_ref.grad.abs().max()  # entries near 0 from cancelling terms: compare to the largest
    torch.testing.assert_close(dA_in.grad.double(), dA_ref.grad, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("chunk_size", [8, 16, 32, 64])
@pytest.mark.parametrize("dtype,tol,grad_tol", [(torch.float32, 1e-5, 2e-4), (f64, 1e-10, 1e-10)])
def test_ssd_chunked_strong_decay_gradients_equal_recurrence(chunk_size, dtype, tol, grad_tol):
    # dt * A uniform in [-5, 0]: chunk-local cumsums reach -5 * chunk_size while neighbours still
    # decay by only exp(-2.5) on average, so cancellation in their differences would show.
    x, _, _, B, C, D = ssd_inputs(2, 100, 4, 8, 8, 2)
    dt = torch.rand(2, 100, 4, generator=torch.Generator().manual_seed(1), dtype=f64)
    A = torch.full((4,), -5.0, dtype=f64)
    ref_inputs = [t.clone().requires_grad_() for t in (x, dt, A, B, C, D)]
    y_ref, h_ref = ssd_loop(*ref_inputs)
    (y_ref.sin().sum() + h_ref.sum()).backward()
    inputs = [t.to(dtype).requires_grad_() for t in (x, dt, A, B, C, D)]
    y, h = ssd_chunked(*inputs[:5], chunk_size, D=inputs[5], return_final_state=True)
    (y.sin().sum() + h.sum()).backward()
    assert rel_err(y, y_ref) < tol and rel_err(h, h_ref) < tol
    for t, t_ref in zip(inputs, ref_inputs):
        assert torch.isfinite(t.grad).all()
        assert rel_err(t.grad, t_ref.grad) < grad_tol


def test_ssd_chunked_gradcheck():
    inputs = [t.requires_grad_() for t in ssd_inputs(1, 7, 2, 2, 3, 1)]
    h0 = torch.randn(1, 2, 2, 3, dtype=f64, requires_grad=True)

    def fn(x, dt, A, B, C, D, h0):
        y, h = ssd_chunked(x, dt, A, B, C, 4, D=D, initial_state=h0, return_final_state=True)
        return y, h

    assert torch.autograd.gradcheck(fn, (*inputs, h0), fast_mode=True)


# ---------------------------------------------------------------------------------------------
# selective_scan


def selective_inputs(batch, dim, seqlen, dstate, bc_shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, seqlen, generator=g, dtype=f64)
    delta = torch.randn(batch, dim, seqlen, generator=g, dtype=f64) - 1
    A = -torch.exp(torch.randn(dim, dstate, generator=g, dtype=f64))
    shapes = {"const": (dim, dstate), "var": (batch, dstate, seqlen), "groups": (batch, 2, dstate, seqlen)}
    B = torch.randn(*shapes[bc_shape], generator=g, dtype=f64)
    C = torch.randn(*shapes[bc_shape], generator=g, dtype=f64)
    D = torch.randn(dim, generator=g, dtype=f64)
    z = torch.randn(batch, dim, seqlen, generator=g, dtype=f64)
    bias = torch.randn(dim, generator=g, dtype=f64) * 0.5
    return u, delta, A, B, C, D, z, bias


@pytest.mark.parametrize("bc_shape", ["const", "var", "groups"])
@pytest.mark.parametrize("seqlen", [1, 33])
@pytest.mark.parametrize("gated", [False, True])
def test_selective_scan_equals_recurrence_float64(bc_shape, seqlen, gated):
    u, delta, A, B, C, D, z, bias = selective_inputs(2, 6, seqlen, 5, bc_shape)
    kwargs = dict(z=z, delta_bias=bias, delta_softplus=True) if gated else {}
    y, last = selective_scan(u, delta.abs() if not gated else delta, A, B, C, D, return_last_state=True, **kwargs)
    y_ref = selective_loop(u, delta.abs() if not gated else delta, A, B, C, D, **kwargs)
    assert y.shape == u.shape and y.dtype == f64
    assert rel_err(y, y_ref) < 1e-10
    assert last.shape == (2, 6, 5)


def test_selective_scan_initial_state_chains_two_halves():
    u, delta, A, B, C, D, z, bias = selective_inputs(2, 6, 40, 5, "var")
    kw = dict(delta_bias=bias, delta_softplus=True)
    y_full, h_full = selective_scan(u, delta, A, B, C, D, z=z, return_last_state=True, **kw)
    y1, h1 = selective_scan(
        u[..., :17], delta[..., :17], A, B[..., :17], C[..., :17], D, z=z[..., :17], return_last_state=True, **kw
    )
    y2, h2 = selective_scan(
        u[..., 17:],
        delta[..., 17:],
        A,
        B[..., 17:],
        C[..., 17:],
        D,
        z=z[..., 17:],
        return_last_state=True,
        initial_state=h1,
        **kw,
    )
    assert rel_err(torch.cat([y1, y2], dim=-1), y_full) < 1e-12
    assert rel_err(h2, h_full) < 1e-12


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_selective_scan_low_precision_inputs(dtype, tol):
    args = [t.to(dtype) for t in selective_inputs(2, 8, 50, 4, "var")]
    u, delta, A, B, C, D, z, bias = args
    y = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    u, delta, A, B, C, D, z, bias = (t.double() for t in args)
    y_ref = selective_loop(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    assert y.dtype == dtype
    assert rel_err(y, y_ref) < tol


@pytest.mark.parametrize("bc_shape", ["const", "var", "groups"])
def test_selective_scan_gradcheck(bc_shape):
    u, delta, A, B, C, D, z, bias = (t.requires_grad_() for t in selective_inputs(1, 4, 5, 3, bc_shape))
    h0 = torch.randn(1, 4, 3, dtype=f64, requires_grad=True)

    def fn(u, delta, A, B, C, D, z, bias, h0):
        return selective_scan(
            u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True, return_last_state=True, initial_state=h0
        )

    assert torch.autograd.gradcheck(fn, (u, delta, A, B, C, D, z, bias, h0), fast_mode=True)


# ---------------------------------------------------------------------------------------------
# Modules against an independent step-by-step computation from their own parameters


def causal_conv_explicit(x, weight, bias):
    """x (b, L, c), weight (c, 1, K): out[t] = bias + sum_k weight[k] * x[t - (K-1) + k], zeros before t=0."""
    K = weight.shape[-1]
    out = bias.expand_as(x).clone()
    for t in range(x.shape[1]):
        for k in range(K):
            s = t - (K - 1) + k
            if s >= 0:
                out[:, t] += weight[:, 0, k] * x[:, s]
    return out


def randomize_(module, seed=1):
    """Perturb weights that init leaves constant (D, norm, biases), so wiring mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("D", "norm.weight", "conv1d.bias"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_mamba2_reference_matches_explicit_computation():
    torch.manual_seed(0)
    m = Mamba2Reference(d_model=8, d_state=4, d_conv=3, expand=2, headdim=4, ngroups=2, chunk_size=4).double()
    randomize_(m)
    u = torch.randn(2, 11, 8, dtype=f64)
    d_inner, H, P, G, N = 16, 4, 4, 2, 4
    zxbcdt = u @ m.in_proj.weight.T
    z, xBC, dt = zxbcdt[..., :d_inner], zxbcdt[..., d_inner:-H], zxbcdt[..., -H:]
    xBC = F.silu(causal_conv_explicit(xBC, m.conv1d.weight, m.conv1d.bias))
    x = xBC[..., :d_inner].reshape(2, 11, H, P)
    B = xBC[..., d_inner : d_inner + G * N].reshape(2, 11, G, N)
    C = xBC[..., d_inner + G * N :].reshape(2, 11, G, N)
    dt = F.softplus(dt + m.dt_bias)
    y, _ = ssd_loop(x, dt, -torch.exp(m.A_log), B, C, m.D)
    y = y.reshape(2, 11, d_inner) * F.silu(z)
    yg = y.reshape(2, 11, G, d_inner // G)  # the norm is per group of heads
    y = (yg / torch.sqrt(yg.square().mean(-1, keepdim=True) + 1e-5)).reshape(2, 11, d_inner) * m.norm.weight
    expected = y @ m.out_proj.weight.T
    assert rel_err(m(u), expected) < 1e-10


@pytest.mark.parametrize("seqlen", [1, 3, 11])
@pytest.mark.parametrize("dtype,tol", [(f64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_mamba2_causal_conv_equals_conv1d(seqlen, dtype, tol):
    # Mamba2Reference computes its conv1d as shifted multiply-adds: the same causal conv, same dtype out
    torch.manual_seed(0)
    m = Mamba2Reference(d_model=8, d_state=4, d_conv=4, expand=2, headdim=4).double()
    randomize_(m)
    xBC = torch.randn(2, seqlen, m.conv_dim, dtype=f64)
    expected = m.conv1d(xBC.transpose(1, 2))[..., :seqlen].transpose(1, 2)
    out = m.to(dtype)._causal_conv(xBC.to(dtype))
    assert out.dtype == dtype
    assert rel_err(out, expected) < tol


def test_mamba1_reference_matches_explicit_computation():
    torch.manual_seed(0)
    m = MambaReference(d_model=20, d_state=3, d_conv=3, expand=2).double()  # dt_rank = 2
    randomize_(m)
    u = torch.randn(2, 9, 20, dtype=f64)
    d_inner, R, N = 40, 2, 3
    xz = u @ m.in_proj.weight.T
    x, z = xz[..., :d_inner], xz[..., d_inner:]
    x = F.silu(causal_conv_explicit(x, m.conv1d.weight, m.conv1d.bias))  # (b, L, d)
    x_dbl = x @ m.x_proj.weight.T
    dt, B, C = x_dbl[..., :R], x_dbl[..., R : R + N], x_dbl[..., R + N :]
    dt = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)  # (b, L, d)
    A = -torch.exp(m.A_log)
    h = torch.zeros(2, d_inner, N, dtype=f64)
    ys = []
    for t in range(9):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + m.D * x[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    expected = y @ m.out_proj.weight.T
    assert rel_err(m(u), expected) < 1e-10


def tiny_modules(seed=0):
    torch.manual_seed(seed)
    return [
        Mamba2Reference(d_model=16, d_state=8, d_conv=4, expand=2, headdim=8, ngroups=2, chunk_size=8),
        MambaReference(d_model=16, d_state=8, d_conv=4, expand=2),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["mamba2", "mamba1"])
def test_causality(index):
    m = tiny_modules()[index].double()
    u = torch.randn(2, 37, 16, dtype=f64)
    out = m(u)
    for t in (0, 7, 8, 20, 35):
        v = u.clone()
        v[:, t + 1 :] = torch.randn_like(v[:, t + 1 :]) * 3
        out_v = m(v)
        assert torch.allclose(out_v[:, : t + 1], out[:, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(out_v[:, t + 1 :], out[:, t + 1 :])


# ---------------------------------------------------------------------------------------------
# Parameter layout and initialisation, as mamba-ssm defines them


MAMBA2_PARAMS = {  # d_model=32, d_state=16, headdim=16, expand=2 -> d_inner 64, nheads 4, conv_dim 96
    "in_proj.weight": (2 * 64 + 2 * 16 + 4, 32),
    "conv1d.weight": (96, 1, 4),
    "conv1d.bias": (96,),
    "dt_bias": (4,),
    "A_log": (4,),
    "D": (4,),
    "norm.weight": (64,),
    "out_proj.weight": (32, 64),
}
MAMBA1_PARAMS = {  # d_model=32, d_state=16, expand=2 -> d_inner 64, dt_rank 2
    "in_proj.weight": (128, 32),
    "conv1d.weight": (64, 1, 4),
    "conv1d.bias": (64,),
    "x_proj.weight": (2 + 2 * 16, 64),
    "dt_proj.weight": (64, 2),
    "dt_proj.bias": (64,),
    "A_log": (64, 16),
    "D": (64,),
    "out_proj.weight": (32, 64),
}


def test_mamba2_parameter_names_shapes_and_init():
    m = Mamba2(d_model=32, d_state=16, headdim=16, expand=2, backend="reference")
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MAMBA2_PARAMS
    assert (m.backend, m.nheads, m.d_inner, m.ngroups, m.chunk_size) == ("reference", 4, 64, 1, 256)
    dt = F.softplus(m.dt_bias)
    assert (dt >= 1e-3 - 1e-7).all() and (dt <= 0.1 + 1e-7).all()
    assert (m.A_log.exp() >= 1).all() and (m.A_log.exp() <= 16).all()
    assert torch.equal(m.D, torch.ones(4)) and torch.equal(m.norm.weight, torch.ones(64))
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.dt_bias, m.A_log, m.D))


def test_mamba1_parameter_names_shapes_and_init():
    m = Mamba(d_model=32, d_state=16, expand=2, backend="reference")
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MAMBA1_PARAMS
    assert (m.backend, m.dt_rank, m.d_inner) == ("reference", 2, 64)
    assert torch.equal(m.A_log, torch.log(torch.arange(1.0, 17.0)).expand(64, 16))
    assert m.dt_proj.weight.abs().max() <= 2**-0.5
    dt = F.softplus(m.dt_proj.bias)
    assert (dt >= 1e-3 - 1e-7).all() and (dt <= 0.1 + 1e-7).all()
    assert torch.equal(m.D, torch.ones(64))
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.A_log, m.D))


@pytest.mark.parametrize("index", [0, 1], ids=["mamba2", "mamba1"])
def test_state_dict_round_trip_and_gradients_reach_every_parameter(index):
    m1, m2 = tiny_modules(seed=0)[index], tiny_modules(seed=1)[index]
    u = torch.randn(2, 19, 16, requires_grad=True)
    assert not torch.equal(m1(u), m2(u))
    m2.load_state_dict(m1.state_dict())
    out = m1(u)
    assert torch.equal(out, m2(u))
    out.square().mean().backward()
    for name, p in m1.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert u.grad.abs().sum() > 0


@pytest.mark.parametrize("index,state_shape", [(0, (2, 4, 8, 8)), (1, (2, 32, 8))], ids=["mamba2", "mamba1"])
def test_module_final_state(index, state_shape):
    m = tiny_modules()[index].double()
    u = torch.randn(2, 19, 16, dtype=f64)
    out, state = m(u, return_final_state=True)
    assert torch.equal(out, m(u)) and state.shape == state_shape
    assert torch.equal(m(u, initial_state=torch.zeros(state_shape, dtype=f64)), out)
    assert not torch.allclose(m(u, initial_state=state), out)


def test_bfloat16_module_forward():
    for m in tiny_modules():
        out = m.to(torch.bfloat16)(torch.randn(2, 13, 16, dtype=torch.bfloat16))
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---------------------------------------------------------------------------------------------
# Config and backend errors


def test_headdim_must_divide_inner_dim():
    with pytest.raises(ConfigError, match=r"divisible by headdim=64.*headdim=32") as err:
        Mamba2(d_model=48, expand=2, headdim=64, backend="reference")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs", [dict(d_model=0), dict(d_model=32, d_state=0), dict(d_model=32, headdim=16, ngroups=3)]
)
def test_mamba2_bad_config(kwargs):
    with pytest.raises(ConfigError):
        Mamba2(**kwargs, backend="reference")


@pytest.mark.parametrize("factory", [Mamba2, Mamba])
def test_unknown_backend(factory):
    with pytest.raises(ConfigError, match="backend"):
        factory(d_model=32, backend="foo")


@pytest.mark.skipif(mamba_ssm_status() is None, reason="mamba-ssm kernels can run here")
@pytest.mark.parametrize("factory", [Mamba2, Mamba])
def test_kernels_backend_unavailable_names_install_command(factory):
    with pytest.raises(BackendUnavailableError, match="pip install"):
        factory(d_model=32, backend="kernels")


@pytest.mark.skipif(mamba_ssm_status() is None, reason="mamba-ssm kernels can run here")
def test_auto_backend_falls_back_to_reference():
    assert isinstance(Mamba2(d_model=32, headdim=16, backend="auto"), Mamba2Reference)
    assert isinstance(Mamba(d_model=32, backend="auto"), MambaReference)


class _RecordingKernel(torch.nn.Module):
    """Stands in for a mamba-ssm module class on CPU: records the keyword arguments it was built with."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs


@pytest.mark.parametrize(
    ("factory", "module_path", "class_name", "path_flag"),
    [
        (Mamba2, "mamba_ssm.modules.mamba2", "Mamba2", "use_mem_eff_path"),
        (Mamba, "mamba_ssm.modules.mamba_simple", "Mamba", "use_fast_path"),
    ],
)
def test_kernel_factories_pass_the_config_and_record_the_path(monkeypatch, factory, module_path, class_name, path_flag):
    fake = types.ModuleType(module_path)
    setattr(fake, class_name, _RecordingKernel)
    monkeypatch.setitem(sys.modules, module_path, fake)
    monkeypatch.setattr(sys.modules[factory.__module__], "resolve_backend", lambda requested, **_: "kernels")
    monkeypatch.setattr(backends, "has_causal_conv1d", lambda: False)
    module = factory(d_model=32, d_state=8, d_conv=3, expand=2, backend="kernels")
    assert module.backend == "kernels" and module.fused is False
    assert module.kwargs["d_model"] == 32 and module.kwargs["d_state"] == 8 and module.kwargs["d_conv"] == 3
    assert module.kwargs[path_flag] is (path_flag == "use_fast_path")
    with pytest.raises(ConfigError, match="d_conv in 2..4"):
        factory(d_model=32, d_state=8, d_conv=5, backend="kernels")
