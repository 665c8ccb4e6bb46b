"""The training step's speed levers (core.fast_step): typed settings, refusals on the CPU, the same
losses as the eager step, and (GPU) the graph-captured step against eager over 50 steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from step_helpers import CELLS, write_tiny_mqar

from align_mamba import kernel_cache
from align_mamba.core.backends import has_causal_conv1d, runs_fused
from align_mamba.core.errors import ConfigError, NonFiniteLossError, run_cli
from align_mamba.core.fast_step import GraphStep, check_levers, refill, use_tensor_lr
from align_mamba.core.loop import Loop
from align_mamba.core.params import from_mapping
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
from align_mamba.recall.train import RecallTask, main, train_cell

CPU = torch.device("cpu")
STEPS = 20
GPU_STEPS = 50


@pytest.fixture(scope="module")
def mqar(tmp_path_factory) -> Path:
    return write_tiny_mqar(tmp_path_factory.mktemp("data"))


def _train(**kw) -> TrainConfig:
    base = dict(steps=STEPS, batch_size=8, eval_every=STEPS, checkpoint_every=STEPS, warmup_steps=5)
    return TrainConfig(**{**base, "device": "cpu", "backend": "reference", **kw})


def _losses(loop: Loop, steps: int) -> torch.Tensor:
    """(steps, 2) [loss, grad norm] of the loop's first `steps` updates."""
    return torch.stack([loop.train_step(step)[1] for step in range(steps)]).cpu()


def _loop(mqar: Path, tmp_path: Path, layout: str, cfg: TrainConfig) -> Loop:
    task = RecallTask(CellConfig(CELLS[layout], cfg), mqar)
    return Loop(task, cfg, tmp_path, tmp_path / "resume")


# ---- settings ------------------------------------------------------------------------------------


def test_the_levers_default_to_todays_eager_step():
    cfg = TrainConfig()
    assert cfg.cuda_graph is False and cfg.compile == "none"


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"compile": "max-autotune"},
            "compile must be one of none, default, max-autotune-no-cudagraphs, got 'max-autotune'",
        ),
        ({"cuda_graph": "yes"}, "train.cuda_graph must be bool, got 'yes' (str)"),
        ({"cuda_graph": 1}, "train.cuda_graph must be bool, got 1 (int)"),
        ({"cuda_graph": True, "device": "cpu"}, "cuda_graph: true needs device cuda"),
    ],
)
def test_a_bad_lever_is_one_line_naming_it(values, message):
    with pytest.raises(ConfigError) as err:
        from_mapping(TrainConfig, values, "train")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_cli_reads_true_and_false(mqar, tmp_path, capsys):
    code = run_cli(main, ["--data", str(mqar), "--out", str(tmp_path / "o"), "--cuda-graph", "maybe"])
    assert code == 2 and "expected true or false, got 'maybe'" in capsys.readouterr().err


def test_train_json_records_which_path_trained_the_cell(mqar, tmp_path, monkeypatch):
    # the expected record is for a run without a kernel cache; a developer may have exported one
    monkeypatch.delenv("ALIGN_MAMBA_CACHE_DIR", raising=False)
    summary = train_cell(
        CellConfig(CELLS["decoder"], _train(steps=2, eval_every=2, checkpoint_every=2)), mqar, tmp_path
    )
    assert summary["train"]["cuda_graph"] is False and summary["train"]["compile"] == "none"
    assert summary["train_path"] == {
        "cuda_graph": False,
        "compile": "none",
        "fused_mamba2": False,
        "mps": False,
        "kernel_cache": "",
    }


# ---- refusals on the CPU (documented in core.fast_step and TrainConfig) --------------------------


def test_cuda_graph_is_refused_when_the_run_resolves_to_the_cpu(mqar, tmp_path, monkeypatch):
    # device auto passes validation (a GPU machine resolves it to cuda); on a CPU the loop refuses
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _train(device="auto", cuda_graph=True)
    with pytest.raises(
        ConfigError,
        match=r"cell mamba2-np6-ds8-s0: cuda_graph: true needs device cuda, but this run resolved device cpu",
    ):
        _loop(mqar, tmp_path, "decoder", cfg)


def test_the_cli_refuses_cuda_graph_on_cpu_with_one_line_and_writes_nothing(mqar, tmp_path, capsys):
    out = tmp_path / "o"
    code = run_cli(main, ["--data", str(mqar), "--out", str(out), "--device", "cpu", "--cuda-graph", "true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "cuda_graph: true needs device cuda" in err[-1]
    assert not (out / "model.pt").exists()


def test_a_task_without_step_inputs_refuses_both_levers():
    class Tagger:
        kind, name, device = "tagger", "bimamba", CPU

    with pytest.raises(ConfigError, match="tagger bimamba: cuda_graph and compile need a task with step_inputs"):
        check_levers(False, "default", Tagger())
    check_levers(False, "none", Tagger())  # today's step needs nothing


def test_refill_rejects_a_batch_of_another_shape():
    static = (torch.zeros(2, 3), slice(1, None), None)
    refill(static, (torch.ones(2, 3), slice(1, None), None))
    assert static[0].eq(1).all()
    with pytest.raises(ConfigError, match=r"batch part 0 is \(4, 3\).*holds \(2, 3\)"):
        refill(static, (torch.ones(4, 3), slice(1, None), None))
    with pytest.raises(ConfigError, match="batch part 1 changed"):
        refill(static, (torch.ones(2, 3), slice(2, None), None))


# ---- the same losses as today's step ------------------------------------------------------------


def _replay_by_rerunning(body):
    """A CPU stand-in for capture_cuda_graph: nothing runs at capture; each replay reruns `body` on
    the static buffers and writes into the static outputs, as a graph's replay does."""
    outputs = torch.empty(2)
    return (lambda: outputs.copy_(body())), outputs


@pytest.mark.parametrize("layout", ["decoder", "seq2seq"])
def test_the_static_buffer_step_gives_todays_losses(mqar, tmp_path, layout):
    """The graph path's structure (warm-up steps, capture once, inputs refilled into static buffers,
    a tensor learning rate written in place) on the reference backend, capture emulated on the CPU."""
    eager = _losses(_loop(mqar, tmp_path / "eager", layout, _train()), STEPS)
    loop = _loop(mqar, tmp_path / "graph", layout, _train())
    use_tensor_lr(loop.optimizer, CPU)
    loop.graph = GraphStep(CPU, loop.task.inputs_loss, loop.update, capture=_replay_by_rerunning)
    static = _losses(loop, STEPS)
    assert loop.graph.warmed == 3 and loop.graph.inputs is not None
    torch.testing.assert_close(static, eager, rtol=1e-5, atol=1e-6)


def test_a_non_finite_loss_on_the_static_buffer_step_still_stops_the_run(mqar, tmp_path):
    """Read every SYNC_EVERY steps, a NaN from a replayed step still names its first step."""
    loop = _loop(mqar, tmp_path, "decoder", _train(steps=40, eval_every=40, checkpoint_every=40))
    calls = []

    def nan_from_the_6th_call(batch):
        calls.append(1)
        loss = loop.task.inputs_loss(batch)
        return loss * torch.tensor(float("nan")) if len(calls) > 5 else loss

    loop.graph = GraphStep(CPU, nan_from_the_6th_call, loop.update, capture=_replay_by_rerunning)
    with pytest.raises(NonFiniteLossError, match=r"cell mamba2-np6-ds8-s0: loss is nan at step 5;"):
        loop.run()
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.slow  # inductor compiles for 1-2 minutes on 2 CPU cores
@pytest.mark.parametrize("layout", ["decoder", "seq2seq"])
def test_the_compiled_step_gives_todays_losses_on_the_cpu(mqar, tmp_path, layout):
    eager = _losses(_loop(mqar, tmp_path / "eager", layout, _train()), STEPS)
    compiled = _losses(_loop(mqar, tmp_path / "compiled", layout, _train(compile="default")), STEPS)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_kernel_cache_points_both_tools_under_one_folder(tmp_path):
    env = {"ALIGN_MAMBA_CACHE_DIR": str(tmp_path / "k"), "TRITON_CACHE_DIR": "/mine"}
    assert kernel_cache.configure(env) == tmp_path / "k"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "k" / "inductor")
    assert env["TRITON_CACHE_DIR"] == "/mine"  # an explicit choice wins
    assert kernel_cache.configure({}) is None


# ---- GPU: the graph-captured step against eager --------------------------------------------------


def _gpu_cell(layout: str) -> ModelConfig:
    """The CPU cells at kernel-friendly widths (headdim 32, chunk 64): mamba-ssm's Triton kernels."""
    import dataclasses

    return dataclasses.replace(CELLS[layout], d_model=64, headdim=32, chunk_size=64)


@pytest.mark.gpu
@pytest.mark.parametrize("levers", [{"cuda_graph": True}, {"cuda_graph": True, "compile": "default"}])
@pytest.mark.parametrize("layout", ["decoder", "seq2seq"])
def test_the_graph_captured_step_matches_eager_over_50_steps(mqar, tmp_path, layout, levers):
    """Same seed, same batches: per-step losses within bf16 autocast's tolerance (a few 1e-3
    relative per step, compounding slowly over 50 AdamW updates)."""
    cfg = _train(steps=GPU_STEPS, device="cuda", backend="kernels")
    eager_loop = Loop(RecallTask(CellConfig(_gpu_cell(layout), cfg), mqar), cfg, tmp_path / "e", tmp_path / "e")
    eager = _losses(eager_loop, GPU_STEPS)
    fast_cfg = _train(steps=GPU_STEPS, device="cuda", backend="kernels", **levers)
    fast_loop = Loop(
        RecallTask(CellConfig(_gpu_cell(layout), fast_cfg), mqar), fast_cfg, tmp_path / "g", tmp_path / "g"
    )
    fast = _losses(fast_loop, GPU_STEPS)
    assert fast_loop.graph.replay is not None  # it did capture
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast[:, 0], eager[:, 0], rtol=3e-2, atol=3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["decoder", "seq2seq"])
def test_the_fused_mamba2_path_matches_the_unfused_over_50_steps(mqar, tmp_path, layout):
    """mamba-ssm's fused path (causal-conv1d's conv, the SSD scan and the gate in one op) against its
    unfused path on the same weights and batches: the same function, so the same losses within bf16
    autocast's tolerance."""
    if not has_causal_conv1d():
        pytest.skip("causal-conv1d is not installed: source .gpu/setup_device.sh --conv")
    import dataclasses

    # The unfused path hands causal-conv1d a slice of the in_proj output, whose row stride (its width,
    # 2*d_inner + 2*d_state + nheads) causal-conv1d needs a multiple of 8: 8 heads of 16 here.
    model = dataclasses.replace(CELLS[layout], d_model=64, headdim=16, chunk_size=64)
    cfg = _train(steps=GPU_STEPS, device="cuda", backend="kernels")
    losses = {}
    for fused in (False, True):
        loop = Loop(RecallTask(CellConfig(model, cfg), mqar), cfg, tmp_path / str(fused), tmp_path / str(fused))
        for module in loop.task.model.modules():
            if hasattr(module, "use_mem_eff_path"):  # mamba_ssm.Mamba2 reads it on every forward
                module.use_mem_eff_path = module.fused = fused
        assert runs_fused(loop.task.model) is fused
        losses[fused] = _losses(loop, GPU_STEPS)
    assert torch.isfinite(losses[True]).all()
    torch.testing.assert_close(losses[True][:, 0], losses[False][:, 0], rtol=3e-2, atol=3e-2)
