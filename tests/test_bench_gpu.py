"""The benchmark on mamba-ssm's kernels (CUDA only; skipped elsewhere by conftest.py).

A short length range must give finite, positive rows for align_mamba's Mamba-2 (kernels), the raw
mamba_ssm.Mamba2 and attention in every mode, with GPU peak memory; and the reference's decode step
must agree with mamba_ssm.Mamba2.step on the same weights, so both are driven by the same code.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from align_mamba.bench import BenchConfig, run_bench
from align_mamba.core.backends import has_causal_conv1d
from align_mamba.mixers import Mamba2, Mamba2Reference

pytestmark = pytest.mark.gpu


# Compiles and autotunes every Mamba-2 Triton kernel in fp32 and bf16, forward and backward: on a
# cold cache, without causal-conv1d and beside another compiling process, it ran past 300 s (H200).
@pytest.mark.timeout(900)
def test_bench_kernels_short_range(tmp_path):
    cfg = BenchConfig(
        device="cuda",
        mixers=("attention", "mamba2", "raw_mamba2", "raw_attention"),
        architectures=("mamba2",),
        lengths=(256, 512),
        decode_contexts=(256, 512),
        tokens_per_batch=4096,
        d_model=128,
        d_states=(64,),
        headdim=64,
        n_heads=4,
        n_layers=2,
        repeats=3,
        warmup=2,
        ladder_rungs=(0, 1, 2, 3),
        ladder_d_model=64,
        ladder_n_layers=2,
        ladder_d_state=16,
        ladder_headdim=16,
        ladder_batch=8,
        ladder_seq_len=256,
        ladder_num_pairs=16,
    )
    summary = run_bench(cfg, tmp_path)
    rows = pd.read_csv(tmp_path / "mixers.csv", keep_default_na=False, na_values=[""])
    assert (rows["status"] == "ok").all(), rows[rows["status"] != "ok"][["name", "mode", "reason"]]
    for name in ("mamba2", "raw_mamba2", "attention"):
        own = rows[rows["name"] == name]
        assert set(own["mode"]) == {"forward", "train", "decode"}
        for column in ("median_ms", "tokens_per_s", "peak_mib"):
            assert own[column].map(math.isfinite).all() and (own[column] >= 0).all()
        assert (own["tokens_per_s"] > 0).all()
    assert set(rows[rows["name"].isin(["mamba2", "raw_mamba2"])]["backend"]) == {"kernels"}
    assert (rows[rows["mode"] == "train"]["peak_mib"] > 0).all()
    assert set(summary["wrapper_tax"]) == {"mamba2", "attention"}
    assert summary["versions"]["mamba_ssm"] is not None and "cpu" not in summary["device"]
    ladder = pd.read_csv(tmp_path / "train_step.csv", keep_default_na=False, na_values=[""]).set_index("rung")
    expected = {0: "ok", 1: "ok", 2: "ok", 3: "ok" if has_causal_conv1d() else "skipped"}
    assert ladder["status"].to_dict() == expected, ladder[["status", "reason"]]
    if not has_causal_conv1d():
        assert ladder.loc[3, "reason"] == "causal-conv1d missing"


def test_reference_step_matches_kernel_step():
    """Ten decode steps from zero states: the reference and mamba_ssm.Mamba2.step on shared weights."""
    torch.manual_seed(0)
    kernel = Mamba2(64, d_state=16, headdim=32, backend="kernels").cuda()
    reference = Mamba2Reference(64, d_state=16, headdim=32).cuda()
    reference.load_state_dict(kernel.state_dict())
    u = torch.randn(2, 10, 64, device="cuda")
    states = [module.allocate_inference_cache(2, 10) for module in (kernel, reference)]
    with torch.no_grad():
        for t in range(10):
            out_k, *_ = kernel.step(u[:, t : t + 1], *states[0])
            out_r, *_ = reference.step(u[:, t : t + 1], *states[1])
            assert ((out_k - out_r).norm() / out_r.norm()).item() < 1e-3
        assert ((states[0][1] - states[1][1]).norm() / states[1][1].norm()).item() < 1e-3
