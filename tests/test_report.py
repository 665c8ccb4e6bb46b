"""The recall report on synthetic typed metrics files: schema, experiments, verdicts, confirm reruns, outputs."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from align_mamba.core.errors import ConfigError
from align_mamba.core.params import to_dict
from align_mamba.recall.config import ModelConfig, TrainConfig
from align_mamba.recall.metrics import (
    SCHEMA_VERSION,
    CellMetrics,
    CellRecord,
    Confirm,
)
from align_mamba.recall.params import Experiment, ReportSettings, build_recall_params, cell_record
from align_mamba.report import write_report
from align_mamba.report.__main__ import main
from align_mamba.report.experiments import (
    ExperimentResult,
    capacity_table,
    load_runs,
    points_table,
    position_figure,
)

CHANCE_LOSS = math.log(4096)  # the full vocabulary's 4096 values

SRC = Path(__file__).resolve().parents[1] / "src"
MODELS = {"mamba2": ("mamba2", []), "hybrid-0": ("hybrid", [0]), "hybrid-1": ("hybrid", [1])}
# (architecture, d_state) → {num_pairs: (seed 0, seed 1)} test accuracies, by hand
ACCURACY = {
    ("mamba2", 8): {4: (1.0, 0.95), 8: (0.2, 0.1)},  # capacity 4 on both seeds
    ("mamba2", 16): {4: (1.0, 1.0), 8: (0.97, 0.3)},  # capacities 8 and 4 (seed 1 fails at 8)
    ("hybrid-0", 8): {4: (1.0, 1.0), 8: (0.99, 0.98)},  # learns everything: capacity ≥ 8
    ("hybrid-0", 16): {4: (1.0, 1.0), 8: (1.0, 0.96)},
}


def metrics_json(
    arch: str,
    num_pairs: int,
    d_state: int,
    seed: int,
    accuracy: float,
    lr: float = 3.0e-3,
    val_accuracy: float | None = None,
    experiments=("cliff",),
    device: str = "cpu",
    backend: str = "reference",
    final_loss: float | None = None,
    steps: int = 100,
) -> dict:
    """A metrics file as `python -m align_mamba.recall.evaluate --cell` writes it."""
    variant, positions = MODELS[arch]
    model = ModelConfig(
        variant=variant,
        name=arch,
        d_model=32,
        n_layers=4,
        d_state=d_state,
        hybrid_positions=tuple(positions),
        encoder_layers=1,
        n_heads=2,
        headdim=16,
        chunk_size=32,
    )
    train = TrainConfig(steps=steps, batch_size=32, lr=lr, seed=seed, device="cpu", backend="auto")
    val = accuracy if val_accuracy is None else val_accuracy
    curve = [
        {"step": s, "accuracy": val * s / steps, "exact_match": 0.0} for s in range(steps // 4, steps + 1, steps // 4)
    ]
    buckets = [{"low": d / 10, "high": (d + 1) / 10, "accuracy": accuracy, "count": 10} for d in range(10)]
    own = {
        "data": f"data/mqar/np{num_pairs}",
        "num_pairs": num_pairs,
        "accuracy": accuracy,
        "exact_match": accuracy / 2,
        "sequences": 100,
        "queries": 100 * num_pairs,
        "by_key_position": buckets,
        "by_distance": [{"low": 1.0, "high": 2.0, "accuracy": accuracy, "count": 5}],
    }
    ssm = 4 * 2 * 32 * d_state
    attention = len(positions) * 2 * 32 * 4 * num_pairs
    stem = f"np{num_pairs}-ds{d_state}-lr{lr:g}-s{seed}"
    return {
        "schema_version": SCHEMA_VERSION,
        "cell": {
            "id": f"{arch}/{stem}",
            "architecture": arch,
            "num_pairs": num_pairs,
            "experiments": list(experiments),
            "model": to_dict(model),
            "train": to_dict(train),
        },
        "accuracy": accuracy,
        "exact_match": accuracy / 2,
        "val_accuracy": val,
        "best_step": steps,
        "train_accuracy": accuracy,
        "train_examples_checked": 1000,
        "steps_trained": steps,
        "stop_reason": "step budget reached",
        "validation": curve,
        "final_train_loss": (0.1 if accuracy > 0.9 else 0.5 * CHANCE_LOSS) if final_loss is None else final_loss,
        "chance_loss": CHANCE_LOSS,
        "state_size": {"ssm": ssm, "attention": attention, "total": ssm + attention},
        "parameters": 12345,
        "backend": backend,
        "device": device,
        "train_backend": backend,
        "train_device": device,
        "wall_seconds": 1.5,
        "slices": [own],
    }


def write_cell(root: Path, metrics: dict) -> Path:
    path = root / f"{metrics['cell']['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


PARAMS = {
    "run": {"device": "cpu", "backend": "auto"},
    "architectures": [
        {"name": "mamba2", "variant": "mamba2"},
        {"name": "hybrid-0", "variant": "hybrid", "hybrid_positions": [0]},
    ],
    "experiments": {
        "cliff": {
            "question": "Does a pure Mamba-2 fall off a cliff?",
            "architectures": ["mamba2", "hybrid-0"],
            "num_pairs": [4, 8],
            "d_state": [8, 16],
            "seeds": [0, 1],
            "lrs": [3.0e-3],
            "expect": [
                {
                    "kind": "accuracy",
                    "architecture": "hybrid-0",
                    "num_pairs": 8,
                    "d_state": 8,
                    "range": [0.9, 1.0],
                    "claim": "the hybrid recalls every pair",
                },
                {
                    "kind": "accuracy",
                    "architecture": "mamba2",
                    "num_pairs": 8,
                    "d_state": 8,
                    "range": [0.9, 1.0],
                    "claim": "mamba2 recalls 8 pairs at d_state 8",
                },
                {"kind": "capacity_ratio", "architecture": "mamba2", "range": [0.4, 0.6]},
            ],
        }
    },
    "data": {"train_size": 2000, "val_size": 200, "test_size": 400},
    "model": {"d_model": 32, "n_layers": 4, "encoder_layers": 1, "n_heads": 2, "headdim": 16, "chunk_size": 32},
    "train": {"steps": 100, "batch_size": 32},
    "evaluate": {"batch_size": 256},
    "report": {"capacity_threshold": 0.9, "bootstrap_samples": 500, "confidence": 0.95},
}


@pytest.fixture
def recall():
    return build_recall_params(copy.deepcopy(PARAMS), "test-params.yaml")


@pytest.fixture
def cells_dir(tmp_path) -> Path:
    root = tmp_path / "cells"
    for (arch, d_state), by_np in ACCURACY.items():
        for num_pairs, seeds in by_np.items():
            for seed, accuracy in enumerate(seeds):
                write_cell(root, metrics_json(arch, num_pairs, d_state, seed, accuracy))
    return root


def test_metrics_round_trip_and_cell_record_is_the_schema():
    data = metrics_json("hybrid-0", 8, 16, 1, 0.96)
    typed = CellMetrics.from_json(json.loads(json.dumps(data)), "m.json")
    assert typed.to_json() == data
    assert (typed.architecture, typed.num_pairs, typed.d_state, typed.seed, typed.lr, typed.suffix) == (
        "hybrid-0",
        8,
        16,
        1,
        3.0e-3,
        "",
    )
    assert typed.slices[0].by_key_position[3].low == pytest.approx(0.3)
    assert typed.steps_to_learn(0.9) == 100 and typed.steps_to_learn(0.4) == 50
    # the record evaluate's --cell writes is exactly the typed CellRecord
    cell = build_recall_params(copy.deepcopy(PARAMS)).cells[0]
    assert CellRecord.from_json(json.loads(json.dumps(cell_record(cell)))).model == cell.model


def test_schema_errors_are_one_line_naming_the_file():
    data = metrics_json("mamba2", 4, 8, 0, 0.5)
    with pytest.raises(
        ConfigError,
        match=r"^m\.json: metrics schema version None, this code reads version 1; "
        r"re-run `python -m align_mamba.recall.evaluate`",
    ):
        CellMetrics.from_json({k: v for k, v in data.items() if k != "schema_version"}, "m.json")
    with pytest.raises(ConfigError, match=r"m\.json\.state_size\.total: expected an integer"):
        CellMetrics.from_json({**data, "state_size": {"ssm": 1, "attention": 0, "total": "1"}}, "m.json")
    with pytest.raises(ConfigError, match=r"m\.json: missing field\(s\) accuracy"):
        CellMetrics.from_json({k: v for k, v in data.items() if k != "accuracy"}, "m.json")
    assert Confirm.from_json({"needed": False, "reason": "no success next to it"}).reason == "no success next to it"
    # A rerun is written as recall.confirm writes it: its metrics, the reason and the budget factor
    rerun = Confirm.from_json({"needed": True, "reason": "edge", "budget_factor": 2, **data}, "c.json")
    assert rerun.budget_factor == 2 and rerun.metrics.accuracy == data["accuracy"]
    with pytest.raises(ConfigError, match=r"c\.json: a rerun needs an integer budget_factor >= 2, got None"):
        Confirm.from_json({"needed": True, **data}, "c.json")


def test_report_answers_the_hypotheses_with_intervals(cells_dir, recall, tmp_path):
    metrics = write_report(cells_dir, tmp_path / "out", recall=recall)
    markdown = (tmp_path / "out" / "report.md").read_text()
    lines = markdown.splitlines()
    # first lines: the kind of run, then one verdict line per hypothesis, with numbers
    assert lines[2] == "## What this run shows" and lines[4].startswith("**A CPU run**")
    assert "results/gpu/" in lines[4]
    assert lines[6].startswith(
        "cliff: the hybrid recalls every pair — expected [0.9, 1], measured "
        "num_pairs 8, d_state 8: 0.985 [0.980, 0.990]; 2/2 seeds learned → **supported**"
    )
    # refuted by failures whose 2x reruns are due and have not run: provisional until they have
    assert "mamba2 recalls 8 pairs at d_state 8" in lines[8] and lines[8].endswith("**refuted (provisional)**")
    # capacity / d_state: 4/8 = 0.5 at d_state 8 (supported); mean(8, 4)/16 = 0.375 at 16, where seed 0
    # learned the largest num_pairs tested: a lower bound, the interval open at the top
    assert "d_state 8: 0.500 [0.500, 0.500]; d_state 16: 0.375 [0.250, ∞] → **inconclusive**" in lines[10]
    assert metrics["cliff.verdict.accuracy.hybrid-0.np8.ds8"] == "supported"
    # (its failures at 8 pairs could still learn at 2x, which would raise the capacity)
    assert metrics["cliff.verdict.capacity_ratio.mamba2.ds8"] == "supported (provisional)"
    assert metrics["cliff.capacity.mamba2.ds16"] == 6.0 and metrics["cliff.capacity.hybrid-0.ds8"] == 8.0
    assert metrics["cliff.accuracy.mamba2.np8.ds16"] == round((0.97 + 0.3) / 2, 3)
    assert metrics["cells"] == 16 and list(metrics) == sorted(metrics)
    # the per-cell table: successes/seeds, Wilson interval, the failure kind
    row = next(line for line in lines if line.startswith("| mamba2 | 16 | 8 |"))
    assert "| 1/2 | [0.09, 0.91] |" in row and "s1 failed (partial recall; 2× rerun not run)" in row
    assert {"figures/cliff_cliff.png", "figures/capacity_cliff.png"} <= {
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out" / "figures").iterdir()
    }
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png;base64,") == 2


def test_no_capacity_is_null_and_values_are_rounded(tmp_path, recall):
    root = tmp_path / "cells"
    for (arch, d_state), by_np in ACCURACY.items():
        for num_pairs, seeds in by_np.items():
            for seed, accuracy in enumerate(seeds):
                low = 0.1 / 3 if arch == "mamba2" and d_state == 8 else accuracy  # never learns: no capacity
                write_cell(root, metrics_json(arch, num_pairs, d_state, seed, low))
    write_report(root, tmp_path / "out", recall=recall)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["cliff.capacity.mamba2.ds8"] is None
    assert metrics["cliff.accuracy.mamba2.np4.ds8"] == 0.033


def test_a_failure_counts_only_if_its_2x_rerun_fails(cells_dir, recall, tmp_path):
    # mamba2 np8 ds16 seed 1 failed (0.3); its rerun at twice the budget learns (0.95)
    rerun = metrics_json("mamba2", 8, 16, 1, 0.95, steps=200)
    (cells_dir / "mamba2" / "np8-ds16-lr0.003-s1.confirm.json").write_text(
        json.dumps({"needed": True, "budget_factor": 2, **rerun})
    )
    # mamba2 np8 ds8 seed 0 failed; its rerun fails on the chance plateau
    flat = metrics_json("mamba2", 8, 8, 0, 0.0, steps=200, final_loss=CHANCE_LOSS)
    (cells_dir / "mamba2" / "np8-ds8-lr0.003-s0.confirm.json").write_text(
        json.dumps({"needed": True, "budget_factor": 2, **flat})
    )
    (cells_dir / "mamba2" / "np8-ds8-lr0.003-s1.confirm.json").write_text(
        json.dumps({"needed": False, "reason": "no learned cell next to it"})
    )
    metrics = write_report(cells_dir, tmp_path / "out", recall=recall)
    markdown = (tmp_path / "out" / "report.md").read_text()
    row16 = next(line for line in markdown.splitlines() if line.startswith("| mamba2 | 16 | 8 |"))
    assert "| 2/2 |" in row16 and "s1: 0.950" in row16  # both runs shown; the seed learned at 2×
    row8 = next(line for line in markdown.splitlines() if line.startswith("| mamba2 | 8 | 8 |"))
    assert "s0 failed at 1× and 2× (chance plateau)" in row8
    assert "s1 failed (partial recall; no 2× rerun: no learned cell next to it)" in row8
    assert metrics["cliff.capacity.mamba2.ds16"] == 8.0


def test_lr_is_chosen_on_validation_not_test(tmp_path, recall):
    root = tmp_path / "cells"
    for (arch, d_state), by_np in ACCURACY.items():
        for num_pairs, seeds in by_np.items():
            for seed, accuracy in enumerate(seeds):
                write_cell(root, metrics_json(arch, num_pairs, d_state, seed, accuracy))
                # a second rate: better on test, worse on validation; it must not be kept
                write_cell(root, metrics_json(arch, num_pairs, d_state, seed, 1.0, lr=1.0e-2, val_accuracy=0.01))
    metrics = write_report(root, tmp_path / "out", threshold=0.9)  # without params: every file, experiments recorded
    assert metrics["cliff.accuracy.mamba2.np8.ds8"] == 0.15 and metrics["cells"] == 32
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| 0.003 ×2 (2 rates run) |" in markdown
    # the sweep's every rate, kept or not: seeds learned / run (mean test accuracy)
    assert "| architecture | d_state | num_pairs | lr 0.003 | lr 0.01 |" in markdown
    assert "| mamba2 | 8 | 8 | 0/2 (0.15) | 2/2 (1.00) |" in markdown


def test_a_kept_rate_at_an_end_of_the_sweep_is_marked(tmp_path):
    """Three rates run: a seed kept at the highest is marked; one kept in the middle is not."""
    root = tmp_path / "cells"
    for seed, best in ((0, 1.0e-2), (1, 3.0e-3)):
        for lr in (1.0e-3, 3.0e-3, 1.0e-2):
            write_cell(root, metrics_json("mamba2", 8, 8, seed, 0.95, lr=lr, val_accuracy=0.9 if lr == best else 0.2))
    write_report(root, tmp_path / "out", threshold=0.9)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| 0.003 ×1, 0.01 ×1 (highest run) (3 rates run) |" in markdown
    assert "(lowest run)" not in markdown


def test_blind_start_plots_against_k(tmp_path):
    root = tmp_path / "cells"
    for arch, acc in (("hybrid-0", 1.0), ("hybrid-1", 0.2)):
        for seed in (0, 1):
            write_cell(root, metrics_json(arch, 8, 8, seed, acc, experiments=("blind_start",)))
    write_report(root, tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "figures/positions_blind_start.png" in markdown and "k=0: hybrid-0, k=1: hybrid-1" in markdown


def test_the_blind_start_figure_shows_the_seeds_learned_at_each_rate(tmp_path):
    """Third panel: per rate, the share of runs at test accuracy ≥ 0.9 against k, each point labelled
    learned/run (hybrid-0 learns at both rates, hybrid-1 at 3e-3 in 1 of 2 seeds and never at 1e-3)."""
    root = tmp_path / "cells"
    outcomes = {("hybrid-0", 3.0e-3): (1.0, 1.0), ("hybrid-0", 1.0e-3): (1.0, 1.0), ("hybrid-1", 3.0e-3): (1.0, 0.2)}
    outcomes[("hybrid-1", 1.0e-3)] = (0.0, 0.0)
    for (arch, lr), accuracies in outcomes.items():
        for seed, acc in enumerate(accuracies):
            write_cell(root, metrics_json(arch, 8, 8, seed, acc, lr=lr, experiments=("blind_start",)))
    experiment = Experiment("blind_start", ("hybrid-0", "hybrid-1"), (8,), (8,), (0, 1), (1.0e-3, 3.0e-3))
    result = ExperimentResult(experiment, load_runs(root), ReportSettings(), recorded=True)
    rate_ax = position_figure(result, {0: "hybrid-0", 1: "hybrid-1"}).axes[2]
    lines = {line.get_label(): list(line.get_ydata()) for line in rate_ax.get_lines()}
    assert lines == {"lr 0.001": [1.0, 0.0], "lr 0.003": [1.0, 0.5]}
    assert sorted(text.get_text() for text in rate_ax.texts) == ["0/2", "1/2", "2/2", "2/2"]


def test_series_show_without_their_override_hash_in_the_architectures_order(tmp_path):
    """Every cell of an experiment with an override carries its hash (-xHASH); where an
    architecture has one series, tables and figures name it plainly; rows keep the params' order
    of architectures (here hybrid-1 first), not the alphabet's."""
    root = tmp_path / "cells"
    for arch in ("hybrid-0", "hybrid-1"):
        for seed in (0, 1):
            metrics = metrics_json(arch, 8, 8, seed, 1.0, experiments=("blind_start",))
            metrics["cell"]["id"] += "-xabc123"
            write_cell(root, metrics)
    experiment = Experiment("blind_start", ("hybrid-1", "hybrid-0"), (8,), (8,), (0, 1), (3.0e-3,))
    result = ExperimentResult(experiment, load_runs(root), ReportSettings(), recorded=True)
    assert result.series == ["hybrid-1-xabc123", "hybrid-0-xabc123"]
    assert points_table(result)["architecture"].tolist() == ["hybrid-1", "hybrid-0"]
    assert capacity_table(result)["architecture"].tolist() == ["hybrid-1", "hybrid-0"]


def test_cli_exits_2_with_one_line_on_an_old_metrics_file(cells_dir, tmp_path):
    old = cells_dir / "mamba2" / "np4-ds8-lr0.003-s0.json"
    data = json.loads(old.read_text())
    del data["schema_version"]
    old.write_text(json.dumps(data))
    result = subprocess.run(
        [sys.executable, "-m", "align_mamba.report", "--cells", str(cells_dir), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "metrics schema version None" in result.stderr


def test_cli_with_params_reads_exactly_its_cells(cells_dir, recall, tmp_path):
    (cells_dir / "mamba2" / "np4-ds8-lr0.003-s0.json").unlink()
    params = tmp_path / "p.yaml"
    with pytest.raises(ConfigError, match="metrics file\\(s\\) of the experiments are missing"):
        write_report(cells_dir, tmp_path / "out", recall=recall)
    assert main is not None and params is not None and not math.isnan(0.0)


def test_a_partial_study_lists_its_missing_cells_and_fills_none_in(cells_dir, recall, tmp_path):
    gone = cells_dir / "mamba2" / "np4-ds8-lr0.003-s0.json"
    gone.unlink()
    metrics = write_report(cells_dir, tmp_path / "out", recall=recall, partial=True)
    listed = (tmp_path / "out" / "not_run.txt").read_text().splitlines()
    assert [line.split("\t")[1] for line in listed] == ["mamba2/np4-ds8-lr0.003-s0"]
    assert metrics["cells_not_run"] == 1
    assert metrics["cells"] == len(list(cells_dir.rglob("*.json")))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "1 cell(s) of params.yaml have not run yet" in report
    assert "--partial" in report  # the regenerate command carries the flag
    # the seed whose cell is gone is not in the table: nothing stands in for it
    cells_csv = (tmp_path / "out" / "cells.csv").read_text()
    assert "mamba2/np4-ds8-lr0.003-s0," not in cells_csv and "mamba2/np4-ds8-lr0.003-s1," in cells_csv


def test_partial_without_params_is_one_line(cells_dir, tmp_path):
    with pytest.raises(ConfigError, match="--partial needs --params"):
        main(["--cells", str(cells_dir), "--out", str(tmp_path / "out"), "--partial"])


def test_a_hypothesis_finds_its_architecture_under_the_experiments_override_suffix(tmp_path):
    """An experiment with model overrides (blind_start's 18 layers) gives its cells an `-x<hash>`
    id suffix; the expectation names the bare architecture and must still find them."""
    root = tmp_path / "cells"
    for seed, accuracy in enumerate((1.0, 0.98, 0.99)):
        metrics = metrics_json("hybrid-0", 8, 8, seed, accuracy, experiments=("blind_start",))
        metrics["cell"]["id"] += "-x123456"
        write_cell(root, metrics)
    params = copy.deepcopy(PARAMS)
    params["experiments"] = {
        "blind_start": {
            "architectures": ["hybrid-0"],
            "num_pairs": [8],
            "d_state": [8],
            "seeds": [0, 1, 2],
            "lrs": [3.0e-3],
            "expect": [
                {"kind": "accuracy", "architecture": "hybrid-0", "num_pairs": 8, "d_state": 8, "range": [0.9, 1.0]}
            ],
        }
    }
    recall = build_recall_params(params, "p.yaml")
    result = ExperimentResult(recall.experiments[0], load_runs(root), recall.report, recorded=True)
    (row,) = result.hypothesis_rows()
    assert row["architecture"] == "hybrid-0" and row["measured"].endswith("3/3 seeds learned")
    assert row["estimate"].value == pytest.approx((1.0 + 0.98 + 0.99) / 3)
