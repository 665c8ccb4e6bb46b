"""Training and evaluating one cell on CPU: learning, resume after kill -9, NaN, metrics."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from align_mamba.core.errors import ConfigError, DataIntegrityError, NonFiniteLossError
from align_mamba.recall.checkpoint import load_model
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
from align_mamba.recall.evaluate import evaluate_cell, slice_metrics
from align_mamba.recall.metrics import CellMetrics
from align_mamba.recall.mqar import MQARConfig
from align_mamba.recall.storage import load_mqar, write_mqar
from align_mamba.recall.train import learning_rate, train_cell

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def mqar4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "np4"
    write_mqar(
        MQARConfig(num_pairs=4, seq_len=16, num_queries=None, train_size=1000, val_size=200, test_size=500, seed=0), out
    )
    return out


def test_transformer_reaches_high_accuracy_at_four_pairs(tmp_path):
    # 100k examples: with fewer, the model memorises training examples before it learns to recall.
    data = write_mqar(
        MQARConfig(num_pairs=4, seq_len=16, num_queries=None, train_size=100_000, val_size=400, test_size=1000, seed=0),
        tmp_path / "np4",
    )
    cell = CellConfig(
        ModelConfig(variant="transformer", d_model=128, n_layers=2, n_heads=4),
        TrainConfig(
            steps=3000,
            batch_size=64,
            lr=3.0e-3,
            warmup_steps=30,
            eval_every=100,
            checkpoint_every=3000,
            patience=100,
            target_accuracy=0.97,
            device="cpu",
            backend="reference",
        ),
    )
    summary = train_cell(cell, data, tmp_path / "run")
    metrics = evaluate_cell(tmp_path / "run" / "model.pt", [data], "reference", "cpu", 256)
    assert metrics["accuracy"] >= 0.9, (summary, metrics["accuracy"])
    assert metrics["backend"] == "sdpa" and metrics["device"] == "cpu"  # no Mamba layer: SDPA either way


def test_pure_mamba2_cell_trains_and_records_what_ran(mqar4, tmp_path):
    cell = CellConfig(
        ModelConfig(variant="mamba2", d_model=32, n_layers=2, d_state=8, headdim=16, chunk_size=8),
        TrainConfig(steps=12, batch_size=16, eval_every=6, checkpoint_every=6, device="cpu", backend="auto"),
    )
    summary = train_cell(cell, mqar4, tmp_path / "run")
    assert summary["backend"] == "reference" and summary["device"] == "cpu"
    assert summary["cell"] == "mamba2-np4-ds8-s0"
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,loss,lr") and len(history) == 1 + 12
    model, meta = load_model(tmp_path / "run" / "model.pt", "auto", torch.device("cpu"))
    assert meta["backend"] == "reference" and model.backend == "reference"


def test_hybrid_cell_trains_and_evaluates_across_slices(mqar4, tmp_path):
    other = tmp_path / "np6"
    write_mqar(
        MQARConfig(num_pairs=6, seq_len=32, num_queries=4, train_size=64, val_size=16, test_size=40, seed=1), other
    )
    cell = CellConfig(
        ModelConfig(
            variant="hybrid",
            hybrid_positions=(0,),
            d_model=32,
            n_layers=2,
            encoder_layers=1,
            d_state=8,
            headdim=16,
            chunk_size=8,
            n_heads=2,
        ),
        TrainConfig(
            steps=6, batch_size=16, lr=2.5e-3, eval_every=3, checkpoint_every=3, device="cpu", backend="reference"
        ),
    )
    train_cell(cell, mqar4, tmp_path / "run")
    metrics = evaluate_cell(tmp_path / "run" / "model.pt", [mqar4, other], "reference", "cpu", 64)
    typed = CellMetrics.from_json(json.loads(json.dumps(metrics)))  # what the report reads back
    assert typed.lr == 2.5e-3  # the report's learning-rate selection names the winner's rate
    assert [s.num_pairs for s in typed.slices] == [4, 6]
    assert typed.slices[1].queries == 40 * 4
    assert typed.state_size.total == 2 * 2 * 32 * 8 + 2 * 32 * (3 * 4 + 2)
    assert typed.train_examples_checked == 1000 and 0 <= typed.train_accuracy <= 1
    assert typed.steps_trained == 6 and [p.step for p in typed.validation] == [3, 6]
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert typed.final_train_loss == pytest.approx(history["loss"].mean())  # 6 steps < FINAL_LOSS_STEPS
    assert typed.chance_loss == pytest.approx(math.log(4096)) and typed.cell.model.hybrid_positions == (0,)


def test_head_keeps_the_first_examples_of_every_per_example_array(mqar4):
    for layout in ("decoder", "seq2seq"):
        split = load_mqar(mqar4, "train", layout)
        head = split.head(7)
        assert len(head) == 7 and head.num_pairs == split.num_pairs and head.layout == layout
        for name in ("inputs", "labels", "enc_inputs", "query_slot", "query_distance"):
            full, part = getattr(split, name), getattr(head, name)
            assert (part is None) == (full is None) and (part is None or torch.equal(part, full[:7]))
        assert len(split.head(10**6)) == len(split)
        inputs, labels, context = head.batch(slice(2, 5), torch.device("cpu"))
        assert inputs.dtype == labels.dtype == torch.int64 and torch.equal(inputs, split.inputs[2:5].long())
        assert (context is None) == (layout == "decoder")


def test_nan_loss_stops_with_cell_and_step_and_no_model(mqar4, tmp_path):
    cell = CellConfig(
        ModelConfig(variant="transformer", d_model=32, n_layers=1, n_heads=2),
        TrainConfig(steps=50, batch_size=16, lr=1.0e30, warmup_steps=0, device="cpu"),
    )
    with pytest.raises(NonFiniteLossError, match=r"cell transformer-np4-ds64-s0: loss is (nan|inf) at step \d+"):
        train_cell(cell, mqar4, tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_learning_rate_warms_up_then_decays_to_floor():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.55)
    assert learning_rate(110, cfg) == pytest.approx(0.1)


def _train_command(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "align_mamba.recall.train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--variant",
        "mamba2",
        "--d-model",
        "32",
        "--n-layers",
        "2",
        "--d-state",
        "8",
        "--headdim",
        "16",
        "--chunk-size",
        "8",
        "--steps",
        "40",
        "--batch-size",
        "16",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "5",
        "--patience",
        "100",
        "--device",
        "cpu",
        "--backend",
        "reference",
    ]


def _kill_after_first_checkpoint(command: list[str], out: Path, env: dict) -> None:
    """Start `command`, SIGKILL it once its first resume checkpoint exists, check it had not finished."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "resume" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists(), "the run finished before it could be killed"


def test_resume_after_kill_equals_uninterrupted_run(mqar4, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run(_train_command(mqar4, tmp_path / "full"), env=env, check=True, capture_output=True)
    assert not (tmp_path / "full" / "resume" / "last.pt").exists(), "a finished run keeps no resume point"

    killed = tmp_path / "killed"
    _kill_after_first_checkpoint(_train_command(mqar4, killed), killed, env)
    resumed_run = subprocess.run(_train_command(mqar4, killed), env=env, check=True, capture_output=True, text=True)
    assert "resumed at step" in resumed_run.stderr

    full = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    resumed = torch.load(killed / "model.pt", weights_only=True)
    assert full["meta"] == resumed["meta"]
    for name, tensor in full["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    assert (tmp_path / "full" / "history.csv").read_text() == (killed / "history.csv").read_text()


def test_resume_ignores_a_checkpoint_of_other_parameters(mqar4, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = _train_command(mqar4, tmp_path / "run")
    _kill_after_first_checkpoint(command, tmp_path / "run", env)
    changed = command[: command.index("--steps")] + ["--steps", "20"] + command[command.index("--steps") + 2 :]
    result = subprocess.run(changed, env=env, check=True, capture_output=True, text=True)
    assert "starting afresh" in result.stderr
    assert json.loads((tmp_path / "run" / "train.json").read_text())["steps_run"] == 20


def test_train_cli_rejects_bad_values_in_one_line(mqar4, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = _train_command(mqar4, tmp_path / "run") + ["--variant", "hybrid", "--hybrid-positions", "0", "5"]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: hybrid_positions [5] outside [0, n_layers=2); raise n_layers to at least 6"
    ]
    assert not (tmp_path / "run").exists()


def test_slice_metrics_on_a_hand_built_split(mqar4):
    split = load_mqar(mqar4, "test", "decoder")
    correct = torch.zeros(len(split), 4, dtype=torch.bool)
    correct[:, 0] = True
    correct[:10] = True
    metrics = slice_metrics(correct, split)
    n = len(split)
    assert metrics.accuracy == pytest.approx((n + 10 * 3) / (4 * n))
    assert metrics.exact_match == pytest.approx(10 / n)
    assert sum(b.count for b in metrics.by_key_position) == 4 * n
    assert sum(b.count for b in metrics.by_distance) == 4 * n
    slots = split.query_slot
    first_decile = next(b for b in metrics.by_key_position if (b.low, b.high) == (0.0, 0.1))
    expected = correct[slots == 0].float().mean().item()
    assert first_decile.accuracy == pytest.approx(expected)
    # distance buckets are octaves [2^b, 2^(b+1)) holding exactly the queries at those distances
    distance = split.query_distance.reshape(-1)
    for b in metrics.by_distance:
        assert b.high == 2 * b.low and math.log2(b.low).is_integer()
        assert b.count == int(((distance >= b.low) & (distance < b.high)).sum())


def test_evaluate_rejects_a_non_checkpoint_and_a_foreign_first_test_set(mqar4, tmp_path):
    not_a_checkpoint = tmp_path / "model.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(DataIntegrityError, match="is not an align-mamba checkpoint"):
        evaluate_cell(not_a_checkpoint, [mqar4], "reference", "cpu", 64)
    cell = CellConfig(
        ModelConfig(variant="transformer", d_model=32, n_layers=1, n_heads=2),
        TrainConfig(steps=2, batch_size=16, eval_every=2, device="cpu"),
    )
    train_cell(cell, mqar4, tmp_path / "run")
    other = write_mqar(
        MQARConfig(num_pairs=5, seq_len=20, num_queries=None, train_size=20, val_size=5, test_size=5, seed=2),
        tmp_path / "np5",
    )
    with pytest.raises(ConfigError, match="must be the cell's own test set"):
        evaluate_cell(tmp_path / "run" / "model.pt", [other, mqar4], "reference", "cpu", 64)


def test_the_model_vocabulary_follows_the_data_and_a_foreign_one_is_refused(mqar4, tmp_path):
    small = write_mqar(
        MQARConfig(
            num_pairs=4, seq_len=16, num_queries=None, num_keys=16, train_size=200, val_size=50, test_size=50, seed=0
        ),
        tmp_path / "np4-k16",
    )
    cell = CellConfig(
        ModelConfig(variant="mamba2", d_model=32, n_layers=1, d_state=8, headdim=16, chunk_size=8),
        TrainConfig(steps=4, batch_size=16, eval_every=2, checkpoint_every=4, device="cpu", backend="reference"),
    )
    summary = train_cell(cell, small, tmp_path / "run")
    assert summary["model"]["vocab_size"] == 42  # 10 reserved tokens + 16 keys + 16 values
    model, _ = load_model(tmp_path / "run" / "model.pt", "reference", torch.device("cpu"))
    assert model.embedding.num_embeddings == 42
    metrics = evaluate_cell(tmp_path / "run" / "model.pt", [small], "reference", "cpu", 64)
    assert metrics["chance_loss"] == pytest.approx(math.log(16))
    with pytest.raises(ConfigError, match="vocabulary of 8192 tokens, the model 42"):
        evaluate_cell(tmp_path / "run" / "model.pt", [small, mqar4], "reference", "cpu", 64)
