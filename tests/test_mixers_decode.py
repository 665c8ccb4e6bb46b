"""Recurrent / KV-cache decoding of the mixers: stepping token by token from empty states must
reproduce the full (parallel) forward in float64, with mamba-ssm's state shapes and layouts."""

from __future__ import annotations

import pytest
import torch

from align_mamba.core.errors import ConfigError
from align_mamba.mixers import Mamba2Reference, MambaReference, SelfAttention

f64 = torch.float64


def randomize_(module, seed=1):
    """Perturb weights that init leaves constant (D, norms, biases), so wiring mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("D", "norm.weight", "conv1d.bias", "qkv_proj.bias"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


def step_through(module, u, cache):
    """Outputs (B, L, D) of calling `module.step` once per position of u (B, L, D)."""
    outs = []
    for t in range(u.shape[1]):
        if isinstance(module, SelfAttention):
            outs.append(module.step(u[:, t : t + 1], cache, t))
        else:
            out, *cache = module.step(u[:, t : t + 1], *cache)
            outs.append(out)
    return torch.cat(outs, dim=1)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


MODULES = [
    pytest.param(
        lambda: Mamba2Reference(d_model=16, d_state=8, d_conv=4, headdim=8, ngroups=1, chunk_size=4), id="mamba2-1group"
    ),
    pytest.param(
        lambda: Mamba2Reference(d_model=16, d_state=6, d_conv=3, headdim=4, ngroups=2, chunk_size=8),
        id="mamba2-2groups",
    ),
    pytest.param(lambda: MambaReference(d_model=20, d_state=5, d_conv=4), id="mamba1"),
    pytest.param(lambda: SelfAttention(d_model=16, n_heads=2), id="attention"),
    pytest.param(lambda: SelfAttention(d_model=16, n_heads=2, window=3), id="attention-window3"),
]


@pytest.mark.parametrize("build", MODULES)
def test_stepping_reproduces_forward_float64(build):
    torch.manual_seed(0)
    module = build().double()
    randomize_(module)
    d_model = module.out_proj.out_features
    u = torch.randn(2, 13, d_model, dtype=f64)  # longer than d_conv and than one chunk
    with torch.no_grad():
        full = module(u)
        stepped = step_through(module, u, module.allocate_inference_cache(2, 13))
    assert rel_err(stepped, full) < 1e-12


def test_decode_continues_from_the_state_of_a_prefix():
    """The last position of a full forward equals decoding it after stepping through the prefix."""
    torch.manual_seed(0)
    module = Mamba2Reference(d_model=16, d_state=8, headdim=8, chunk_size=4).double()
    randomize_(module)
    u = torch.randn(3, 10, 16, dtype=f64)
    with torch.no_grad():
        states = module.allocate_inference_cache(3, 10)
        step_through(module, u[:, :-1], states)
        last, *_ = module.step(u[:, -1:], *states)
        assert rel_err(last, module(u)[:, -1:]) < 1e-12


def test_state_shapes_match_mamba_ssm():
    """mamba_ssm 2.3.2: Mamba2 conv (B, conv_dim, d_conv) as a transposed buffer, ssm (B, H, P, N);
    Mamba conv (B, d_inner, d_conv), ssm (B, d_inner, N)."""
    m2 = Mamba2Reference(d_model=32, d_state=16, d_conv=4, expand=2, headdim=16, ngroups=2)
    conv, ssm = m2.allocate_inference_cache(3, 100, dtype=torch.bfloat16)
    assert conv.shape == (3, 64 + 2 * 2 * 16, 4) and conv.stride() == ((64 + 64) * 4, 1, 64 + 64)
    assert ssm.shape == (3, 4, 16, 16) and {conv.dtype, ssm.dtype} == {torch.bfloat16}
    m1 = MambaReference(d_model=32, d_state=16, d_conv=3)
    conv, ssm = m1.allocate_inference_cache(3, 100)
    assert conv.shape == (3, 64, 3) and ssm.shape == (3, 64, 16) and ssm.dtype == torch.float32
    k, v = SelfAttention(32, 4).allocate_inference_cache(3, 100)
    assert k.shape == v.shape == (3, 4, 100, 8)


def test_attention_step_keeps_the_cache_for_later_positions():
    torch.manual_seed(0)
    module = SelfAttention(d_model=8, n_heads=2).double()
    u = torch.randn(1, 5, 8, dtype=f64)
    cache = module.allocate_inference_cache(1, 5)
    with torch.no_grad():
        step_through(module, u, cache)
    assert cache[0][:, :, :5].abs().min() > 0 and cache[1].abs().sum() > 0


@pytest.mark.parametrize("build", MODULES[:3])
def test_step_rejects_more_than_one_token(build):
    module = build()
    with pytest.raises(ConfigError, match="one token"):
        module.step(torch.randn(1, 2, module.d_model), *module.allocate_inference_cache(1, 2))


def test_attention_step_rejects_bad_position_and_bidirectional():
    module = SelfAttention(8, 2)
    cache = module.allocate_inference_cache(1, 4)
    with pytest.raises(ConfigError, match="outside the cache"):
        module.step(torch.randn(1, 1, 8), cache, 4)
    with pytest.raises(ConfigError, match="causal"):
        SelfAttention(8, 2, causal=False).step(torch.randn(1, 1, 8), cache, 0)
