"""The CPU inference path: Mamba-2's SSD as a linear-time scan, checked against a float64 step loop
written here, against the chunked SSD, and end to end in the tagger (probabilities and spans)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from align_mamba.mixers.mamba2 import Mamba2Reference
from align_mamba.mixers.ssd import ssd_chunked
from align_mamba.mixers.ssd_scan import ssd_recurrent, ssd_scan
from align_mamba.secrets.infer import (
    CPU_SCAN_BLOCK,
    load_tagger,
    predict_bytes,
    predict_spans,
    save_tagger,
    select_inference_path,
)
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig


def loop64(x, dt, A, B, C, D, h0):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t, one scalar head at a time, float64."""
    x, dt, A, B, C, D, h = (t.double() for t in (x, dt, A, B, C, D, h0))
    batch, length, heads, _ = x.shape
    per_group = heads // B.shape[2]
    y = torch.zeros_like(x)
    h = h.clone()
    for b in range(batch):
        for head in range(heads):
            g = head // per_group
            for t in range(length):
                h[b, head] = torch.exp(dt[b, t, head] * A[head]) * h[b, head] + dt[b, t, head] * torch.outer(
                    x[b, t, head], B[b, t, g]
                )
                y[b, t, head] = h[b, head] @ C[b, t, g] + D[head] * x[b, t, head]
    return y, h


def random_inputs(dtype, batch=2, length=37, heads=4, headdim=3, groups=2, state=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, headdim, generator=g, dtype=dtype)
    dt = torch.rand(batch, length, heads, generator=g, dtype=dtype) * 0.5 + 0.01
    A = -torch.rand(heads, generator=g, dtype=dtype) * 2 - 0.1
    B, C = (torch.randn(batch, length, groups, state, generator=g, dtype=dtype) for _ in range(2))
    D = torch.randn(heads, generator=g, dtype=dtype)
    h0 = torch.randn(batch, heads, headdim, state, generator=g, dtype=dtype)
    return x, dt, A, B, C, D, h0


@pytest.mark.parametrize("block", [1, 4, 16, 37, 64])
def test_scan_equals_the_float64_loop_in_float64(block):
    x, dt, A, B, C, D, h0 = random_inputs(torch.float64)
    y_ref, h_ref = loop64(x, dt, A, B, C, D, h0)
    y, h = ssd_scan(x, dt, A, B, C, block, D=D, initial_state=h0, return_final_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
    y, h = ssd_recurrent(x, dt, A, B, C, D=D, initial_state=h0, return_final_state=True)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)


def test_scan_in_float32_is_the_float64_loop_within_rounding_and_keeps_the_dtype():
    x, dt, A, B, C, D, h0 = random_inputs(torch.float32, length=300)
    y_ref, _ = loop64(x, dt, A, B, C, D, h0)
    y = ssd_scan(x, dt, A, B, C, 32, D=D, initial_state=h0)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, ssd_chunked(x, dt, A, B, C, 64, D=D, initial_state=h0), rtol=1e-4, atol=1e-4)


def test_the_mixer_computes_the_same_function_with_either_form():
    torch.manual_seed(0)
    mixer = Mamba2Reference(d_model=16, d_state=8, headdim=8, chunk_size=16).double()
    u = torch.randn(2, 75, 16, dtype=torch.float64)
    chunked = mixer(u)
    mixer.scan_block = 8
    torch.testing.assert_close(mixer(u), chunked, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def tagger_path(tmp_path_factory):
    torch.manual_seed(1)
    config = TaggerConfig(d_model=32, n_layers=2, d_state=8, headdim=16, chunk_size=64)
    names = ("none", "token", "key")
    path = tmp_path_factory.mktemp("tagger") / "model.pt"
    save_tagger(
        path,
        ByteTagger(config, "reference", len(names), names),
        {"threshold": 0.5, "min_span_len": 4, "chunk_len": 512, "overlap": 64},
    )
    return path


def test_the_cpu_path_is_selected_on_load_and_gives_todays_probabilities_and_spans(tagger_path):
    model, meta = load_tagger(tagger_path, torch.device("cpu"), "reference")
    assert meta["inference_path"] == f"cpu scan (SSD recurrence, blocks of {CPU_SCAN_BLOCK})"
    mixers = [m for m in model.modules() if isinstance(m, Mamba2Reference)]
    assert mixers and all(m.scan_block == CPU_SCAN_BLOCK for m in mixers)
    rng = np.random.default_rng(0)
    text = "".join(f"key_{i} = '{''.join(rng.choice(list('abcdef0123456789'), 24))}'\n" for i in range(120))
    data = text.encode()  # ~4 KB: several windows, one short edge batch
    fast = predict_bytes(model, data, torch.device("cpu"), 512, 64, 4)
    for mixer in mixers:
        mixer.scan_block = None  # today's path: the chunked SSD
    slow = predict_bytes(model, data, torch.device("cpu"), 512, 64, 4)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)
    # Spans: thresholds at quantiles of p(secret) so that some bytes pass, away from any byte's value.
    p = 1 - slow[:, 0]
    for q in (0.5, 0.8, 0.95):
        threshold = float(np.quantile(p, q))
        gaps = np.abs(p - threshold)
        threshold += 1e-4 if gaps.min() < 1e-4 else 0.0
        spans_slow = predict_spans(model, data, torch.device("cpu"), 512, 64, 4, threshold, 1)
        for mixer in mixers:
            mixer.scan_block = CPU_SCAN_BLOCK
        spans_fast = predict_spans(model, data, torch.device("cpu"), 512, 64, 4, threshold, 1)
        for mixer in mixers:
            mixer.scan_block = None
        assert spans_slow and [(s.start, s.end, s.format) for s in spans_fast] == [
            (s.start, s.end, s.format) for s in spans_slow
        ]
        assert [s.score for s in spans_fast] == pytest.approx([s.score for s in spans_slow], abs=1e-5)


def test_off_the_cpu_nothing_changes(tagger_path):
    model, _ = load_tagger(tagger_path, torch.device("cpu"), "reference")
    for mixer in model.modules():
        if isinstance(mixer, Mamba2Reference):
            mixer.scan_block = None
    assert select_inference_path(model, torch.device("meta")) == "chunked SSD"
    assert all(m.scan_block is None for m in model.modules() if isinstance(m, Mamba2Reference))
