"""RoPE in SelfAttention: cached tables against the reference formula and a hand-computed rotation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from align_mamba.mixers.attention import RotaryTables, SelfAttention, apply_rotary, rotary


def test_rotary_turns_a_unit_pair_by_its_position():
    # head_dim 2: one frequency, base**0 = 1, so position p turns (1, 0) into (cos p, sin p).
    x = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(1, 1, 4, 2)
    expected = torch.tensor([[math.cos(p + 3), math.sin(p + 3)] for p in range(4)], dtype=torch.float64)
    torch.testing.assert_close(rotary(x, offset=3)[0, 0], expected)
    cos, signed_sin = RotaryTables(2, 10000.0).get(7, x.device, torch.float64)
    torch.testing.assert_close(apply_rotary(x, cos[3:], signed_sin[3:])[0, 0], expected)


@pytest.mark.parametrize("first_end,offset,length", [(4, 0, 9), (4, 37, 5), (64, 10, 20)])
def test_tables_grow_and_rotate_like_the_reference(first_end, offset, length):
    tables = RotaryTables(8, 10000.0)
    tables.get(first_end, torch.device("cpu"), torch.float64)
    cos, signed_sin = tables.get(offset + length, torch.device("cpu"), torch.float64)
    assert cos.shape == (offset + length, 8)
    x = torch.randn(2, 3, length, 8, dtype=torch.float64)
    torch.testing.assert_close(apply_rotary(x, cos[offset:], signed_sin[offset:]), rotary(x, offset=offset))


def test_tables_follow_the_dtype_asked_for():
    tables = RotaryTables(8, 10000.0)
    assert tables.get(5, torch.device("cpu"), torch.float64)[0].dtype == torch.float64
    cos, signed_sin = tables.get(5, torch.device("cpu"), torch.bfloat16)
    assert cos.dtype == signed_sin.dtype == torch.bfloat16
    x = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(apply_rotary(x.bfloat16(), cos, signed_sin).double(), rotary(x), atol=3e-2, rtol=2e-2)


def test_causal_self_attention_matches_rotary_plus_sdpa_float64():
    torch.manual_seed(0)
    attention = SelfAttention(16, 2).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    q, k, v = attention.qkv_proj(x).view(2, 11, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
    y = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)  # (B, H, L, Dh)
    torch.testing.assert_close(attention(x), attention.out_proj(y.transpose(1, 2).reshape(2, 11, 16)))
    assert not any("rope" in name or "cos" in name for name in attention.state_dict())


def test_tables_first_built_in_inference_mode_still_serve_training():
    attention = SelfAttention(16, 2)
    x = torch.randn(2, 9, 16)
    with torch.inference_mode():
        attention(x)  # the tables are built here, during an evaluation pass
    attention(x).sum().backward()
    assert attention.qkv_proj.weight.grad is not None
