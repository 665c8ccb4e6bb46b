"""The default grid end to end, through Snakemake and through `dvc repro`, in temporary copies."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from pipeline_helpers import project_copy, run

pytestmark = pytest.mark.slow


def _cells(project) -> int:
    params = yaml.safe_load((project / "params.yaml").read_text())["grid"]
    return len(params["architectures"]) * len(params["num_pairs"]) * len(params["d_state"]) * len(params["seeds"])


def _check_report(project) -> dict:
    metrics = json.loads((project / "results" / "metrics.json").read_text())
    assert metrics["cells"] == _cells(project)
    assert all(isinstance(value, (int, float)) for value in metrics.values())
    html = (project / "results" / "report.html").read_text()
    assert "data:image/png;base64," in html
    for name in ("mixers.csv", "train_step.csv", "summary.json", "scan_throughput.csv"):
        assert (project / "results" / "bench" / name).is_file()
    taggers = yaml.safe_load((project / "params.yaml").read_text())["secrets"]["taggers"]
    for tagger in taggers:
        assert (project / "results" / "secrets" / tagger["name"] / "summary.json").is_file()
        assert f"secrets.{tagger['name']}.test.span_f1" in metrics
    assert (project / "results" / "secrets" / "baselines" / "summary.csv").is_file()
    assert "bench.training_speedup" in metrics
    cell_files = sorted((project / "results" / "cells").rglob("*.json"))
    assert len(cell_files) == _cells(project)
    for path in cell_files:
        cell = json.loads(path.read_text())
        assert cell["device"] == "cpu" and cell["backend"] == "reference"
    return metrics


def test_snakemake_runs_the_default_grid_and_dvc_records_it(tmp_path):
    project = project_copy(tmp_path / "project", dvc=True)
    run(["snakemake", "--cores", "2"], project)
    _check_report(project)
    assert len(list((project / "logs" / "train").rglob("*.log"))) == _cells(project)
    status = run(["dvc", "status", "--json"], project)
    assert json.loads(status.stdout) == {}, "onsuccess should have run `dvc commit` so DVC agrees"
    rerun = run(["snakemake", "--cores", "2", "-n"], project)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


def _stages_run(output: str, kind: str) -> set[str]:
    return set(re.findall(rf"Running stage '({kind}@[^']+)'", output))


def test_dvc_repro_runs_only_changed_cells_and_restores_from_run_cache(tmp_path):
    project = project_copy(tmp_path / "project", dvc=True)
    first = run(["dvc", "repro"], project)
    assert len(_stages_run(first.stdout, "train")) == _cells(project)
    _check_report(project)

    # Replace d_state 16 by 4: only the d_state-4 cells train, then the report.
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params_path.write_text(original.replace("d_state: [8, 16]", "d_state: [8, 4]"))
    edited = run(["dvc", "repro"], project)
    new_trains = _stages_run(edited.stdout, "train")
    assert len(new_trains) == _cells(project) // 2
    assert {name.split("-")[-2] for name in new_trains} == {"4"}
    assert "Running stage 'report'" in edited.stdout

    # Back to 16: those cells are recognised (lock or run-cache), nothing trains; the report reruns.
    params_path.write_text(original)
    reverted = run(["dvc", "repro"], project)
    assert _stages_run(reverted.stdout, "train") == set()
    assert _stages_run(reverted.stdout, "evaluate") == set()
    skipped = re.findall(r"Stage '(train@[^']+)' (?:didn't change|is cached)", reverted.stdout)
    assert len(skipped) == _cells(project)
    assert json.loads((project / "results" / "metrics.json").read_text())["cells"] == _cells(project)

    # A cell whose outputs are gone (a fresh checkout) comes back from the run-cache, untrained.
    shutil.rmtree(project / "runs" / "mamba2" / "np4-ds16-s0")
    restored = run(["dvc", "repro"], project)
    assert "Stage 'train@arch0-4-16-0' is cached - skipping run, checking out outputs" in restored.stdout
    assert (project / "runs" / "mamba2" / "np4-ds16-s0" / "model.pt").is_file()
