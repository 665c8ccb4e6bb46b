"""The committed study (results/study/) is what its README says: GPU cells of its own params, a
report that regenerates from them byte for byte, and a queue planned from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import ROOT

from align_mamba.recall.merge import PackedFile, check_file
from align_mamba.recall.params import load_recall_params
from align_mamba.recall.schedule import main as schedule
from align_mamba.report.__main__ import main as report

STUDY = ROOT / "results" / "study"
FILES = sorted(STUDY.glob("cells/*/*.json"))


def test_the_study_params_are_the_preset():
    assert (STUDY / "params.yaml").read_bytes() == (ROOT / "workflow" / "presets" / "study.yaml").read_bytes()


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(STUDY / "cells")) for p in FILES])
def test_every_cell_is_a_gpu_cell_of_the_study(path: Path):
    cells = {cell.id: cell for cell in load_recall_params(STUDY / "params.yaml").cells}
    check_file(PackedFile(str(path.relative_to(STUDY / "cells")), path.read_bytes()), cells, str(path))


def test_the_report_regenerates_from_the_committed_cells(tmp_path, monkeypatch):
    """The README's command, run from the project root, writes the committed files again."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "study"
    args = ["--params", "results/study/params.yaml", "--cells", "results/study/cells", "--out", str(out), "--partial"]
    assert report(args) == 0
    for name in ("cells.csv", "metrics.json", "not_run.txt", "skipped.txt"):
        assert (out / name).read_bytes() == (STUDY / name).read_bytes(), name
    # the report names the folder it was written to in its regenerate command
    assert (out / "report.md").read_text().replace(str(out), "results/study") == (STUDY / "report.md").read_text()


def test_the_queue_is_planned_from_the_committed_cells(tmp_path):
    queue = tmp_path / "queue.txt"
    args = [
        "--params",
        str(STUDY / "params.yaml"),
        "--cells",
        str(STUDY / "cells"),
        "--order",
        str(STUDY / "queue.txt"),
    ]
    assert schedule([*args, "--out", str(queue)]) == 0
    assert queue.read_text() == (STUDY / "queue.txt").read_text()
