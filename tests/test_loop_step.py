"""The training step's structure: no host reads of device values, queries as a fixed slice or index
positions (never a boolean mask), the same loss as the masked formulation, failures still loud."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from step_helpers import CELLS, write_tiny_mqar

from align_mamba.core.errors import NonFiniteLossError
from align_mamba.core.loop import SYNC_EVERY, Loop
from align_mamba.recall.config import CellConfig, TrainConfig
from align_mamba.recall.mqar import IGNORE_INDEX
from align_mamba.recall.train import RecallTask, batch_loss, train_cell

CPU = torch.device("cpu")
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture(scope="module")
def mqar(tmp_path_factory) -> Path:
    return write_tiny_mqar(tmp_path_factory.mktemp("data"))


def _train(**kw) -> TrainConfig:
    return TrainConfig(
        **{**dict(steps=4, batch_size=8, eval_every=4, checkpoint_every=4, device="cpu", backend="reference"), **kw}
    )


@contextlib.contextmanager
def host_reads_forbidden(monkeypatch):
    """Every Python-level read of a tensor's value raises while active."""
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def forbid(name):
        def raising(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} inside the training step")

        return raising

    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, forbid(name))
        yield saved


@pytest.mark.parametrize("layout", ["decoder", "seq2seq"])
def test_the_step_reads_no_device_value_and_scores_queries_without_a_mask(mqar, monkeypatch, tmp_path, layout):
    task = RecallTask(CellConfig(CELLS[layout], _train()), mqar)
    loop = Loop(task, task.cell.train, tmp_path, tmp_path / "resume")
    seen = []
    forward = task.model.forward

    def recording(inputs, queries, context=None):
        seen.append(queries)
        return forward(inputs, queries, context)

    monkeypatch.setattr(task.model, "forward", recording)
    optimizer_step = loop.optimizer.step

    def host_optimizer_step(*args, **kwargs):
        # AdamW on a CPU reads its step counter on the host by design; on CUDA the loop uses fused
        # AdamW, which keeps it on the device (the GPU test checks that with sync debug mode).
        with monkeypatch.context() as restore:
            for name, original in saved.items():
                restore.setattr(torch.Tensor, name, original)
            return optimizer_step(*args, **kwargs)

    loop.optimizer.step = host_optimizer_step
    with host_reads_forbidden(monkeypatch) as saved:
        row, values = loop.train_step(0)
        loop.train_step(1)
    assert row == {"step": 1, "lr": pytest.approx(loop.cfg.lr / loop.cfg.warmup_steps)}
    assert values.shape == (2,) and values.device.type == "cpu"
    if layout == "seq2seq":
        assert seen[0] == slice(1, None)
    else:
        assert seen[0].dtype == torch.int64 and seen[0].shape == (8, 4)


@pytest.mark.parametrize("layout", ["decoder", "seq2seq"])
def test_the_query_loss_equals_the_masked_formulation(mqar, layout):
    task = RecallTask(CellConfig(CELLS[layout], _train()), mqar)
    idx = task.sampler.indices(3)
    loss = batch_loss(task.model, task.train_split, idx, CPU)
    inputs, labels, context = task.train_split.batch(idx, CPU)
    mask = labels != IGNORE_INDEX
    masked = F.cross_entropy(task.model(inputs, mask, context), labels[mask])
    torch.testing.assert_close(loss, masked, rtol=1e-6, atol=0)
    # and the positions are the labelled ones, in row-major order
    _, queries, targets, _ = task.train_split.query_batch(idx, CPU)
    assert torch.equal(targets, labels[mask])


def test_losses_and_grad_norms_are_recorded_per_step_after_the_batched_read(mqar, tmp_path):
    steps = SYNC_EVERY + 3  # crosses one periodic read and ends on the final one
    summary = train_cell(
        CellConfig(CELLS["decoder"], _train(steps=steps, eval_every=steps, checkpoint_every=steps, warmup_steps=2)),
        mqar,
        tmp_path / "run",
    )
    lines = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(lines) == 1 + steps and summary["steps_run"] == steps
    for line in lines[1:]:
        step, loss, lr, grad_norm = line.split(",")[:4]
        assert float(loss) > 0 and float(grad_norm) > 0


def test_a_non_finite_loss_still_stops_the_run_naming_its_first_step(mqar, tmp_path, monkeypatch):
    task_loss = RecallTask.step_loss

    def nan_from_step_5(self, step):
        loss = task_loss(self, step)
        return loss * torch.tensor(float("nan")) if step >= 5 else loss

    monkeypatch.setattr(RecallTask, "step_loss", nan_from_step_5)
    with pytest.raises(NonFiniteLossError, match=r"cell mamba2-np6-ds8-s0: loss is nan at step 5;"):
        train_cell(
            CellConfig(CELLS["decoder"], _train(steps=40, eval_every=40, checkpoint_every=40)), mqar, tmp_path / "run"
        )
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.gpu
def test_the_cuda_step_makes_no_host_sync(mqar, tmp_path):
    """The whole step (loss, backward, clip, fused AdamW) under CUDA's sync debug mode set to error."""
    task = RecallTask(CellConfig(CELLS["decoder"], _train(device="cuda", backend="kernels")), mqar)
    loop = Loop(task, task.cell.train, tmp_path, tmp_path / "resume")
    loop.train_step(0)  # first call: Triton compiles and autotunes (which may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            loop.train_step(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize(
    "device, omp, limited", [("cuda", None, True), ("cuda", "4", False), ("cpu", None, False)], ids=str
)
def test_a_gpu_run_takes_one_host_thread_unless_told_otherwise(monkeypatch, device, omp, limited):
    """A GPU run's host work is batch indexing: one thread, so packed cells never wait at each other's
    OpenMP barriers; an explicit OMP_NUM_THREADS (Snakemake's, a user's) and CPU runs are left alone."""
    from align_mamba.core import loop

    calls = []
    monkeypatch.setattr(loop.torch, "set_num_threads", calls.append)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    loop.limit_host_threads(torch.device(device))
    assert calls == ([1] if limited else [])
