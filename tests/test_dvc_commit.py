"""A Snakemake run of one target exits 0 and DVC records exactly the stage it finished.

A bare `dvc commit --force` (the old onsuccess step) fails after such a partial run because the rest
of the grid's outputs do not exist, which turned every partial run into exit 1.
"""

from __future__ import annotations

import json
import shutil

import pytest
from pipeline_helpers import ROOT, project_copy, run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("snakemake") and shutil.which("dvc")), reason="needs snakemake and dvc"),
]


def test_snakemake_one_target_exits_0_and_commits_only_that_stage(tmp_path):
    project = project_copy(tmp_path / "project", params=ROOT / "workflow" / "presets" / "tiny.yaml", dvc=True)
    run(["python", "-m", "align_mamba.pipeline", "dvc"], project)
    result = run(["snakemake", "--cores", "1", "data/mqar/np4"], project, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "committing 2 finished DVC stage(s)" in result.stdout + result.stderr  # validate and the target
    status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert "mqar_data-np4" not in status and "validate" not in status, "the finished stages are recorded"
    assert "mqar_data-np8" in status and any(name.startswith("train-") for name in status), "the rest is not"
    bare = run(["dvc", "commit", "--force", "--quiet"], project, check=False)
    assert bare.returncode != 0, "a bare commit still fails after a partial run: the reason for the stage list"
    assert not list((project / "data" / "mqar").glob(".*.lock")), "a finished writer leaves no lock file"
