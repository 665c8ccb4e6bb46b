"""The tiny preset end to end, through Snakemake and through `dvc repro`, in temporary copies."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from pipeline_helpers import ROOT, project_copy, run

from align_mamba.params import load_params

pytestmark = pytest.mark.slow


TINY = ROOT / "workflow" / "presets" / "tiny.yaml"


def _cells(project) -> int:
    return len(load_params(project / "params.yaml").recall.cells)


def _check_report(project) -> dict:
    metrics = json.loads((project / "results" / "metrics.json").read_text())
    assert metrics["cells"] == _cells(project)
    assert all(value is None or isinstance(value, (int, float, str)) for value in metrics.values())
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
    cell_files = sorted(
        path for path in (project / "results" / "cells").rglob("*.json") if ".confirm." not in path.name
    )
    assert len(cell_files) == _cells(project)
    for path in cell_files:
        cell = json.loads(path.read_text())
        assert cell["device"] == "cpu" and cell["backend"] == "reference"
    report = (project / "results" / "report.md").read_text()
    assert "## " in report and "verdict" in report.lower()
    return metrics


def test_snakemake_runs_the_default_grid_and_dvc_records_it(tmp_path):
    project = project_copy(tmp_path / "project", params=TINY, dvc=True)
    run(["snakemake", "--cores", "2"], project)
    _check_report(project)
    assert len(list((project / "logs" / "train").rglob("*.log"))) == _cells(project)
    status = run(["dvc", "status", "--json"], project)
    assert json.loads(status.stdout) == {}, "onsuccess should have run `dvc commit` so DVC agrees"
    rerun = run(["snakemake", "--cores", "2", "-n"], project)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # A setting the cells read changes: their jobs rerun (as DVC's stages would), the tagger's do not.
    params_path = project / "params.yaml"
    params_path.write_text(params_path.read_text().replace("\n  steps: 20\n", "\n  steps: 22\n", 1))
    edited = run(["snakemake", "--cores", "2", "-n"], project)
    output = edited.stdout + edited.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M))
    assert int(jobs["train"]) == _cells(project) and int(jobs["evaluate"]) == _cells(project), output[-3000:]
    assert "secrets_train" not in jobs and "Params have changed since last execution" in output


def _stages_run(output: str, kind: str) -> set[str]:
    return set(re.findall(rf"Running stage '({kind}-[^']+)'", output))


def test_dvc_repro_runs_only_changed_cells_and_restores_from_run_cache(tmp_path):
    project = project_copy(tmp_path / "project", params=TINY, dvc=True)
    run(["python", "-m", "align_mamba.pipeline", "dvc"], project)
    first = run(["dvc", "repro"], project)
    assert len(_stages_run(first.stdout, "train")) == _cells(project)
    _check_report(project)

    # Add d_state 4: with dvc.yaml stale, DVC's first stage stops the run and says how to fix it.
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params_path.write_text(original.replace("d_state: [8]", "d_state: [8, 4]"))
    stale = run(["dvc", "repro"], project, check=False)
    assert (
        stale.returncode != 0
        and "regenerate it with `python -m align_mamba.pipeline dvc`" in stale.stdout + stale.stderr
    )
    # Regenerated, only the d_state-4 cells train, then the report.
    run(["python", "-m", "align_mamba.pipeline", "dvc"], project)
    edited = run(["dvc", "repro"], project)
    new_trains = _stages_run(edited.stdout, "train")
    assert len(new_trains) == _cells(project) // 2 and all("-ds4-" in name for name in new_trains)
    assert "Running stage 'report'" in edited.stdout

    # Back: the d_state-8 cells are recognised, nothing trains.
    params_path.write_text(original)
    run(["python", "-m", "align_mamba.pipeline", "dvc"], project)
    reverted = run(["dvc", "repro"], project)
    assert _stages_run(reverted.stdout, "train") == set()
    assert _stages_run(reverted.stdout, "evaluate") == set()
    assert json.loads((project / "results" / "metrics.json").read_text())["cells"] == _cells(project)

    # A cell whose outputs are gone (a fresh checkout) comes back from the cache, untrained.
    cell = load_params(params_path).recall.cells[0]
    shutil.rmtree(project / cell.run_dir)
    restored = run(["dvc", "repro"], project)
    assert _stages_run(restored.stdout, "train") == set()
    assert (project / cell.run_dir / "model.pt").is_file()
