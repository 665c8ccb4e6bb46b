"""The pure-PyTorch mixers against mamba-ssm's kernels on the same weights (CUDA only).

Forward outputs and the gradients of the input and of every parameter must agree in float32 to a
relative error (norm of the difference over norm of the reference) of 1e-3. The reference runs with
TF32 off, and conftest.py sets TRITON_F32_DEFAULT=ieee so that mamba-ssm's Triton kernels do too:
under TF32 the per-head dt_bias and A_log gradients of Mamba-2 (each one sum over every batch, time,
head-dim and state position, through dA's cumulative sums) came out 1.1e-3 to 2.2e-3 from the
reference on an H100, and 2e-6 under IEEE float32, while the reference agrees with float64 to 1e-6.
Every test is marked `gpu` and skipped without CUDA and mamba-ssm (conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from align_mamba.core.backends import has_causal_conv1d, has_selective_scan_cuda
from align_mamba.core.errors import BackendUnavailableError
from align_mamba.mixers.mamba1 import Mamba, MambaReference
from align_mamba.mixers.mamba2 import Mamba2, Mamba2Reference

pytestmark = pytest.mark.gpu

TOL = 1e-3
BF16_TOL = 1e-2

MAMBA2_SHAPES = [  # batch, seqlen, d_model, d_state, headdim, ngroups, chunk_size
    pytest.param((2, 64, 64, 16, 16, 1, 256), id="L64-one-chunk"),
    pytest.param((2, 300, 128, 64, 32, 2, 64), id="L300-ragged-chunks-2groups"),
    # in_proj width 2*128 + 2*16 + 4 = 292, not a multiple of 8: see test_mamba2_matches_kernels
    pytest.param((2, 64, 64, 16, 32, 1, 256), id="L64-in_proj-292"),
]
MAMBA1_SHAPES = [  # batch, seqlen, d_model, d_state
    pytest.param((2, 64, 64, 16), id="L64"),
    pytest.param((2, 300, 128, 64), id="L300"),
]


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 on the reference side (cuBLAS and cuDNN); restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def forward_backward(module, u, grad_out):
    """Output, input gradient and {name: parameter gradient} of one forward/backward."""
    module.zero_grad(set_to_none=True)
    u = u.detach().clone().requires_grad_()
    out = module(u)
    out.backward(grad_out)
    return out.detach(), u.grad, {name: p.grad for name, p in module.named_parameters()}


def assert_same_function(reference, kernel, batch, seqlen, d_model):
    """Load the reference's weights into the kernel module, then compare outputs and all gradients."""
    kernel.load_state_dict(reference.state_dict())
    torch.manual_seed(1)
    u = torch.randn(batch, seqlen, d_model, device="cuda")
    grad_out = torch.randn(batch, seqlen, d_model, device="cuda")
    out_r, du_r, grads_r = forward_backward(reference, u, grad_out)
    out_k, du_k, grads_k = forward_backward(kernel, u, grad_out)
    assert grads_k.keys() == grads_r.keys()
    errors = {"output": rel_err(out_k, out_r), "input": rel_err(du_k, du_r)}
    errors.update({name: rel_err(grads_k[name], grads_r[name]) for name in grads_r})
    print(type(kernel).__name__, {name: f"{err:.1e}" for name, err in errors.items()})
    too_far = {name: err for name, err in errors.items() if err > TOL}
    assert not too_far, errors


def mamba2_pair(d_model, d_state, headdim, ngroups, chunk_size, use_mem_eff_path):
    from mamba_ssm.modules.mamba2 import Mamba2 as KernelMamba2

    torch.manual_seed(0)
    kwargs = dict(
        d_model=d_model, d_state=d_state, d_conv=4, expand=2, headdim=headdim, ngroups=ngroups, chunk_size=chunk_size
    )
    reference = Mamba2Reference(**kwargs).cuda()
    kernel = KernelMamba2(**kwargs, use_mem_eff_path=use_mem_eff_path).cuda()
    return reference, kernel


@pytest.mark.parametrize("shape", MAMBA2_SHAPES)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_mamba2_matches_kernels(shape, fused):
    if fused and not has_causal_conv1d():
        pytest.skip("Mamba-2's fused path needs causal-conv1d")
    batch, seqlen, d_model, d_state, headdim, ngroups, chunk_size = shape
    d_in_proj = 4 * d_model + 2 * ngroups * d_state + 2 * d_model // headdim
    if not fused and has_causal_conv1d() and d_in_proj % 8 != 0:
        # mamba-ssm's unfused path hands causal_conv1d_fn a slice of the in_proj output, whose row
        # stride causal-conv1d requires to be a multiple of 8; the fused path copies it first.
        # The Mamba2 factory only goes unfused when causal-conv1d is missing, so it never hits this.
        pytest.skip("mamba-ssm's unfused path with causal-conv1d needs the in_proj width to be a multiple of 8")
    reference, kernel = mamba2_pair(d_model, d_state, headdim, ngroups, chunk_size, use_mem_eff_path=fused)
    assert_same_function(reference, kernel, batch, seqlen, d_model)


@pytest.mark.parametrize("shape", MAMBA1_SHAPES)
@pytest.mark.parametrize("fast_path", [True, False], ids=["mamba_inner_fn", "selective_scan_fn"])
def test_mamba1_matches_kernels(shape, fast_path):
    if not has_selective_scan_cuda():
        pytest.skip("Mamba-1 kernels need mamba-ssm's compiled selective_scan_cuda")
    if fast_path and not has_causal_conv1d():
        pytest.skip("mamba_inner_fn needs causal-conv1d")
    from mamba_ssm.modules.mamba_simple import Mamba as KernelMamba

    batch, seqlen, d_model, d_state = shape
    torch.manual_seed(0)
    reference = MambaReference(d_model=d_model, d_state=d_state).cuda()
    kernel = KernelMamba(d_model=d_model, d_state=d_state, use_fast_path=fast_path).cuda()
    assert_same_function(reference, kernel, batch, seqlen, d_model)


def test_mamba2_bf16_autocast_close_to_float32():
    reference, kernel = mamba2_pair(128, 64, 32, 1, 64, use_mem_eff_path=has_causal_conv1d())
    kernel.load_state_dict(reference.state_dict())
    u = torch.randn(2, 300, 128, device="cuda")
    with torch.no_grad():
        expected = reference(u)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_k, out_r = kernel(u), reference(u)
    assert out_k.dtype == out_r.dtype == torch.bfloat16
    assert rel_err(out_k, expected) <= BF16_TOL
    assert rel_err(out_r, expected) <= BF16_TOL


def test_factories_build_kernel_modules_with_reference_layout_and_init():
    torch.manual_seed(0)
    kernel = Mamba2(d_model=64, d_state=16, headdim=32, backend="kernels")
    torch.manual_seed(0)
    reference = Mamba2(d_model=64, d_state=16, headdim=32, backend="reference")
    assert type(kernel).__module__.startswith("mamba_ssm")
    assert kernel.backend == "kernels" and kernel.fused == has_causal_conv1d() == kernel.use_mem_eff_path
    # Same names, shapes and random draws: identical weights under one seed.
    ref_state, kernel_state = reference.state_dict(), kernel.state_dict()
    assert ref_state.keys() == kernel_state.keys()
    assert all(torch.equal(ref_state[k], kernel_state[k]) for k in ref_state)


def test_mamba1_factory_kernels_or_clear_error():
    if not has_selective_scan_cuda():
        with pytest.raises(BackendUnavailableError, match="pip install"):
            Mamba(d_model=64, backend="kernels")
        assert isinstance(Mamba(d_model=64, backend="auto"), MambaReference)
        return
    torch.manual_seed(0)
    kernel = Mamba(d_model=64, backend="kernels")
    torch.manual_seed(0)
    reference = Mamba(d_model=64, backend="reference")
    assert type(kernel).__module__.startswith("mamba_ssm") and kernel.backend == "kernels"
    ref_state, kernel_state = reference.state_dict(), kernel.state_dict()
    assert ref_state.keys() == kernel_state.keys()
    assert all(torch.equal(ref_state[k], kernel_state[k]) for k in ref_state)
