"""The lead-rate rule: which cells a study under scarce GPU time runs next, from validation alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_report import metrics_json, write_cell

from align_mamba.core.errors import ConfigError
from align_mamba.recall.params import load_recall_params
from align_mamba.recall.schedule import plan
from align_mamba.report import write_report

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "workflow" / "presets" / "tiny.yaml"
RATES = (1.0e-3, 3.0e-3, 1.0e-2)


def params_with(tmp_path, monkeypatch, num_pairs=(2,), seeds=(0, 1, 2), confirm="selected", expect=()):
    raw = yaml.safe_load(TINY.read_text())
    raw["experiments"] = {
        "cliff": {
            "question": "q",
            "architectures": ["mamba2"],
            "num_pairs": list(num_pairs),
            "d_state": [4],
            "seeds": list(seeds),
            "lrs": list(RATES),
            "confirm": confirm,
            "expect": list(expect),
        }
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    return load_recall_params(path)


def cid(num_pairs, lr, seed):
    return f"mamba2/np{num_pairs}-ds4-lr{lr:g}-s{seed}"


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """mamba2 at 2 pairs, rates 1e-3, 3e-3, 1e-2, seeds 0-2, confirm selected."""
    return params_with(tmp_path, monkeypatch)


def test_nothing_run_the_lead_seed_sweeps_and_the_rest_waits(sweep):
    result = plan(sweep, {}, set())
    assert result.ready == tuple(cid(2, lr, 0) for lr in RATES)
    assert set(result.waiting) == {cid(2, lr, s) for lr in RATES for s in (1, 2)}
    assert result.skipped == ()


def test_the_docstring_example(sweep):
    validation = {cid(2, 1e-3, 0): 0.40, cid(2, 3e-3, 0): 0.99, cid(2, 1e-2, 0): 0.01}
    assert plan(sweep, validation, set()).ready == (cid(2, 3e-3, 1), cid(2, 3e-3, 2))
    validation |= {cid(2, 3e-3, 1): 0.95, cid(2, 3e-3, 2): 0.30}
    result = plan(sweep, validation, set())
    assert set(result.skipped) == {cid(2, 1e-3, 1), cid(2, 1e-2, 1)}
    assert set(result.ready) == {cid(2, 1e-3, 2), cid(2, 1e-2, 2)} and result.waiting == ()
    # seed 2 failed at every rate: its kept rate (best on validation, 1e-3) gets the 2x rerun
    validation |= {cid(2, 1e-3, 2): 0.50, cid(2, 1e-2, 2): 0.02}
    assert plan(sweep, validation, set()).ready == (cid(2, 1e-3, 2) + ".confirm",)
    assert plan(sweep, validation, {cid(2, 1e-3, 2)}).ready == ()


def test_a_seed_that_learned_off_the_lead_rate_needs_nothing_more(sweep):
    # seed 1 ran at 3e-3 and learned before the lead seed's sweep finished; the lead rate then came
    # out as 1e-2, where seed 2 still has to run
    validation = {cid(2, 3e-3, 1): 0.95, cid(2, 1e-3, 0): 0.40, cid(2, 3e-3, 0): 0.99, cid(2, 1e-2, 0): 0.995}
    result = plan(sweep, validation, set())
    assert result.ready == (cid(2, 1e-2, 2),)
    assert set(result.skipped) == {cid(2, 1e-3, 1), cid(2, 1e-2, 1)}
    # a seed that ran off the lead rate and failed there still goes to the lead rate
    validation[cid(2, 3e-3, 1)] = 0.30
    assert set(plan(sweep, validation, set()).ready) == {cid(2, 1e-2, 1), cid(2, 1e-2, 2)}


def test_ties_on_validation_lead_to_the_smaller_rate(sweep):
    validation = {cid(2, lr, 0): 1.0 for lr in RATES}
    assert plan(sweep, validation, set()).ready == (cid(2, 1e-3, 1), cid(2, 1e-3, 2))


def test_a_failed_lead_seed_still_picks_a_lead_rate_and_gets_its_rerun(sweep):
    validation = {cid(2, 1e-3, 0): 0.10, cid(2, 3e-3, 0): 0.20, cid(2, 1e-2, 0): 0.05}
    result = plan(sweep, validation, set())
    assert result.ready == (cid(2, 3e-3, 0) + ".confirm", cid(2, 3e-3, 1), cid(2, 3e-3, 2))


def test_the_order_file_decides_the_order_and_unknown_ids_are_ignored(sweep):
    order = [cid(2, 1e-2, 0), "mamba2/np999-ds4-lr0.001-s0", cid(2, 1e-3, 0)]
    assert plan(sweep, {}, set(), order).ready == (cid(2, 1e-2, 0), cid(2, 1e-3, 0), cid(2, 3e-3, 0))


def test_an_edge_failure_needs_its_neighbours_at_the_same_rate(tmp_path, monkeypatch):
    grid = params_with(tmp_path, monkeypatch, num_pairs=(2, 8), seeds=(0, 1), confirm="edge")
    # 2 pairs: seed 0 best at 3e-3, seed 1 learned there, so its other rates are skipped
    validation = {cid(2, 1e-3, 0): 0.5, cid(2, 3e-3, 0): 0.99, cid(2, 1e-2, 0): 0.9, cid(2, 3e-3, 1): 0.97}
    # 8 pairs: seed 0 best at 1e-2; seed 1 failed there and at every other rate
    validation |= {cid(8, 1e-3, 0): 0.2, cid(8, 3e-3, 0): 0.3, cid(8, 1e-2, 0): 0.95}
    validation |= {cid(8, lr, 1): 0.1 for lr in RATES}
    result = plan(grid, validation, set())
    # the edge confirm of 8 pairs at 1e-3 and 1e-2 reads 2 pairs at the same rates: needed again
    assert set(result.ready) == {cid(2, 1e-3, 1), cid(2, 1e-2, 1), cid(8, 3e-3, 1) + ".confirm"}
    assert result.skipped == ()
    validation |= {cid(2, 1e-3, 1): 0.2, cid(2, 1e-2, 1): 0.95}
    # 8 pairs at 3e-3 and 1e-2 sit next to a success at 2 pairs, same rate: they rerun; at 1e-3
    # every neighbour failed (2 pairs at 1e-3, 8 pairs at 3e-3): not at an edge, no rerun
    assert set(plan(grid, validation, set()).ready) == {cid(8, 3e-3, 1) + ".confirm", cid(8, 1e-2, 1) + ".confirm"}


def write_sweep(root, validation):
    """Metrics files for {(num_pairs, lr, seed): validation accuracy}; test accuracy follows validation."""
    for (num_pairs, lr, seed), val in validation.items():
        write_cell(root, metrics_json("mamba2", num_pairs, 4, seed, val, lr=lr, val_accuracy=val))


def test_cli_writes_ready_then_waiting(sweep, tmp_path):
    write_sweep(tmp_path / "cells", {(2, lr, 0): val for lr, val in zip(RATES, (0.4, 0.99, 0.01))})
    out = tmp_path / "queue.txt"
    done = subprocess.run(
        [sys.executable, "-m", "align_mamba.recall.schedule", "--params", "params.yaml", "--cells", "cells"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    # seeds 1 and 2 at the lead rate, then their other rates (needed only if they fail there)
    waiting = [cid(2, lr, s) for lr in (1e-3, 1e-2) for s in (1, 2)]
    assert out.read_text().split() == [cid(2, 3e-3, 1), cid(2, 3e-3, 2), *waiting]
    assert "2 ready, 4 waiting" in done.stderr


def test_a_study_complete_under_the_rule_reports_without_partial(sweep, tmp_path):
    validation = {(2, lr, 0): val for lr, val in zip(RATES, (0.4, 0.99, 0.01))}
    write_sweep(tmp_path / "cells", validation | {(2, 3e-3, 1): 0.95, (2, 3e-3, 2): 0.97})
    metrics = write_report(tmp_path / "cells", tmp_path / "out", recall=sweep)
    assert metrics["cells_skipped"] == 4 and "cells_not_run" not in metrics
    listed = [line.split("\t")[1] for line in (tmp_path / "out" / "skipped.txt").read_text().splitlines()]
    assert sorted(listed) == sorted(cid(2, lr, s) for lr in (1e-3, 1e-2) for s in (1, 2))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "4 cell(s) of this experiment's grid were not needed" in report
    assert "| mamba2 | 4 | 2 |" in report and "3/3" in report


def test_a_needed_cell_missing_still_fails_without_partial(sweep, tmp_path):
    validation = {(2, lr, 0): val for lr, val in zip(RATES, (0.4, 0.99, 0.01))}
    write_sweep(tmp_path / "cells", validation | {(2, 3e-3, 1): 0.95})
    with pytest.raises(ConfigError, match="3 metrics file\\(s\\) of the experiments are missing"):
        write_report(tmp_path / "cells", tmp_path / "out", recall=sweep)


def test_a_verdict_on_a_point_with_cells_to_run_is_provisional(tmp_path, monkeypatch):
    expect = {"kind": "accuracy", "architecture": "mamba2", "num_pairs": 2, "d_state": 4, "range": [0.9, 1.0]}
    recall = params_with(tmp_path, monkeypatch, expect=[expect])
    validation = {(2, lr, 0): val for lr, val in zip(RATES, (0.4, 0.99, 0.01))}
    write_sweep(tmp_path / "cells", validation | {(2, 3e-3, 1): 0.95})
    # seed 2 has still to run at the lead rate: two seeds already put the mean inside the range
    metrics = write_report(tmp_path / "cells", tmp_path / "out", recall=recall, partial=True)
    assert metrics["cliff.verdict.accuracy.mamba2.np2.ds4"] == "supported (provisional)"
    assert "→ **supported (provisional)**" in (tmp_path / "out" / "report.md").read_text()
    write_sweep(tmp_path / "cells", {(2, 3e-3, 2): 0.97})
    metrics = write_report(tmp_path / "cells", tmp_path / "out", recall=recall)
    assert metrics["cliff.verdict.accuracy.mamba2.np2.ds4"] == "supported"


def test_a_capacity_that_cells_to_run_can_still_raise_is_starred(tmp_path, monkeypatch):
    expect = {"kind": "capacity_ratio", "architecture": "mamba2", "range": [0.25, 1.0]}
    recall = params_with(tmp_path, monkeypatch, num_pairs=(2, 4), seeds=(0, 1), expect=[expect])
    # seed 0: learns 2 pairs at 3e-3 and fails 4 at every rate; seed 1 learns 2 at the lead rate
    validation = {(2, lr, 0): v for lr, v in zip(RATES, (0.4, 0.99, 0.01))}
    validation |= {(4, lr, 0): v for lr, v in zip(RATES, (0.1, 0.2, 0.05))} | {(2, 3e-3, 1): 0.95}
    write_sweep(tmp_path / "cells", validation)
    metrics = write_report(tmp_path / "cells", tmp_path / "out", recall=recall, partial=True)
    report = (tmp_path / "out" / "report.md").read_text()
    # seed 0's failure at 4 pairs waits on its 2x rerun, seed 1 has 4 pairs to run: both can rise
    assert "| mamba2 | 4 | s0: 2*, s1: 2* |" in report
    assert metrics["cliff.verdict.capacity_ratio.mamba2.ds4"] == "supported (provisional)"
    # seed 1 fails 4 pairs at every rate; both 2x reruns fail: nothing can raise a capacity
    write_sweep(tmp_path / "cells", {(4, lr, 1): 0.1 for lr in RATES})
    # (each seed's kept rate: 3e-3 for seed 0, the best on validation; 1e-3 for seed 1, the tie's smaller)
    for seed, lr in ((0, 3e-3), (1, 1e-3)):
        stem = tmp_path / "cells" / "mamba2" / f"np4-ds4-lr{lr:g}-s{seed}"
        rerun = metrics_json("mamba2", 4, 4, seed, 0.1, lr=lr, val_accuracy=0.1, steps=200)
        stem.with_name(stem.name + ".confirm.json").write_text(
            json.dumps({"needed": True, "budget_factor": 2, **rerun})
        )
    metrics = write_report(tmp_path / "cells", tmp_path / "out", recall=recall)
    assert "| mamba2 | 4 | s0: 2, s1: 2 |" in (tmp_path / "out" / "report.md").read_text()
    assert metrics["cliff.verdict.capacity_ratio.mamba2.ds4"] == "supported"


def test_a_rerun_that_learned_settles_its_seed_and_moves_the_lead_rate(tmp_path, monkeypatch):
    grid = params_with(tmp_path, monkeypatch, num_pairs=(2, 8), seeds=(0, 1), confirm="edge")
    # 2 pairs: both seeds learn at 1e-2; 8 pairs: the lead seed fails at every rate, 1e-3 best by a hair
    validation = {cid(2, lr, 0): v for lr, v in zip(RATES, (0.2, 0.5, 0.99))} | {cid(2, 1e-2, 1): 0.98}
    validation |= {cid(8, lr, 0): v for lr, v in zip(RATES, (0.011, 0.010, 0.010))}
    assert cid(8, 1e-3, 1) in plan(grid, validation, set()).ready
    # its edge rerun at 1e-2 (next to 2 pairs' success) learned: 1e-2 leads now, and seed 0 needs
    # no rerun at its other rates, since it learned 8 pairs
    result = plan(grid, validation, {cid(8, 1e-2, 0)}, reruns={cid(8, 1e-2, 0): 0.93})
    assert result.ready == (cid(8, 1e-2, 1),)
    assert not any(job.endswith(".confirm") for job in result.ready)


def test_a_seeds_rerun_that_learned_is_its_kept_run_and_raises_its_capacity(tmp_path, monkeypatch):
    recall = params_with(tmp_path, monkeypatch, num_pairs=(2, 8), seeds=(0,), confirm="edge")
    # 8 pairs fails at every rate at 1x, 1e-3 best on validation by a hair; the 2x rerun at 1e-2 learned
    validation = {(2, lr, 0): v for lr, v in zip(RATES, (0.2, 0.5, 0.99))}
    validation |= {(8, lr, 0): v for lr, v in zip(RATES, (0.011, 0.010, 0.010))}
    write_sweep(tmp_path / "cells", validation)
    stem = tmp_path / "cells" / "mamba2" / f"np8-ds4-lr{1e-2:g}-s0"
    rerun = metrics_json("mamba2", 8, 4, 0, 0.93, lr=1e-2, val_accuracy=0.93, steps=200)
    stem.with_name(stem.name + ".confirm.json").write_text(json.dumps({"needed": True, "budget_factor": 2, **rerun}))
    write_report(tmp_path / "cells", tmp_path / "out", recall=recall, partial=True)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| mamba2 | 4 | s0: 8 |" in report
