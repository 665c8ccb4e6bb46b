"""One checkpoint, two backends: a model saved from the CPU reference runs on the GPU kernels
and gives the same logits; a GPU training step and evaluation record what actually ran."""

from __future__ import annotations

import pytest
import torch

from align_mamba.core.backends import has_selective_scan_cuda
from align_mamba.recall.checkpoint import load_model, save_model
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
from align_mamba.recall.evaluate import evaluate_cell
from align_mamba.recall.models import build_model
from align_mamba.recall.mqar import MQARConfig
from align_mamba.recall.storage import write_mqar
from align_mamba.recall.train import train_cell

pytestmark = pytest.mark.gpu

CONFIGS = [
    pytest.param(dict(variant="mamba2"), id="decoder-mamba2"),
    pytest.param(dict(variant="mamba1"), id="decoder-mamba1"),
    pytest.param(dict(variant="hybrid", hybrid_positions=(0, 1)), id="hybrid-mamba2"),
]


@pytest.fixture(autouse=True)
def no_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.mark.parametrize("overrides", CONFIGS)
def test_reference_checkpoint_runs_on_kernels_with_the_same_logits(overrides, tmp_path):
    if overrides["variant"] == "mamba1" and not has_selective_scan_cuda():
        pytest.skip("mamba-ssm's selective_scan_cuda (Mamba-1) is not built")
    config = ModelConfig(d_model=64, d_state=16, headdim=32, chunk_size=64, n_layers=2, n_heads=4, **overrides)
    torch.manual_seed(0)
    reference = build_model(config, "reference")
    save_model(tmp_path / "model.pt", reference, reference.state_dict(), {"cell": "parity"})
    kernels, _ = load_model(tmp_path / "model.pt", "kernels", torch.device("cuda"))
    assert kernels.backend == "kernels"

    inputs = torch.randint(10, 8192, (2, 100))
    context = torch.randint(10, 8192, (2, 40)) if config.variant == "hybrid" else None
    mask = torch.rand(2, 100) < 0.3
    with torch.no_grad():
        expected = reference.eval()(inputs, mask, context)
        got = kernels(inputs.cuda(), mask.cuda(), context.cuda() if context is not None else None).cpu()
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-3


def test_a_gpu_cell_trains_with_kernels_and_evaluates_on_the_cpu_reference(tmp_path):
    write_mqar(
        MQARConfig(num_pairs=8, seq_len=32, num_queries=None, train_size=512, val_size=64, test_size=64, seed=0),
        tmp_path / "data",
    )
    cell = CellConfig(
        ModelConfig(
            variant="hybrid",
            hybrid_positions=(0,),
            d_model=64,
            d_state=16,
            headdim=32,
            n_layers=2,
            encoder_layers=1,
            n_heads=4,
        ),
        TrainConfig(steps=20, batch_size=32, eval_every=10, checkpoint_every=10, device="cuda", backend="kernels"),
    )
    summary = train_cell(cell, tmp_path / "data", tmp_path / "run")
    assert summary["backend"] == "kernels" and summary["device"] == f"cuda:0 ({torch.cuda.get_device_name(0)})"
    on_gpu = evaluate_cell(tmp_path / "run" / "model.pt", [tmp_path / "data"], "kernels", "cuda", 64)
    on_cpu = evaluate_cell(tmp_path / "run" / "model.pt", [tmp_path / "data"], "reference", "cpu", 64)
    assert on_cpu["backend"] == "reference" and on_cpu["train"]["backend"] == "kernels"
    assert abs(on_gpu["accuracy"] - on_cpu["accuracy"]) <= 0.05  # bf16 autocast on GPU, fp32 on CPU
