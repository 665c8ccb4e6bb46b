"""tools/gpu_allocation.sh on the CPU: one tiny cell, started, waited for and packed.

The property that matters on a lent GPU, whose every call re-sends the project's working tree: the
run lives in its own scratch copy, so the project folder gains nothing the next sync could delete
(data, cells, checkpoints), and what `pack` carries off is whole."""

from __future__ import annotations

import io
import lzma
import re
import shutil
import tarfile
from datetime import datetime

import pytest
from pipeline_helpers import ROOT, project_copy, run

from align_mamba.core.errors import DataIntegrityError
from align_mamba.recall.merge import merge

CELL = "hybrid-0/np4-ds8-lr0.003-s0"


def _tree(project):
    """The project's files, less the kernel cache (.cache/, ignored by git: kept on purpose)."""
    return sorted(p.relative_to(project) for p in project.rglob("*") if p.relative_to(project).parts[0] != ".cache")


def _stamps(log) -> list[datetime]:
    """The times Snakemake printed in a log, in order ([Sun Dec  6 23:58:21 2026])."""
    found = re.findall(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$", log.read_text(), re.M)
    return [datetime.strptime(" ".join(t.split()), "%a %b %d %H:%M:%S %Y") for t in found]


def test_an_allocation_runs_outside_the_project_and_packs_its_cell(tmp_path):
    project = project_copy(tmp_path / "project")
    (project / "tools").mkdir()
    (project / "tools" / "gpu_allocation.sh").write_bytes((ROOT / "tools" / "gpu_allocation.sh").read_bytes())
    (project / "tools" / "mps.sh").write_bytes((ROOT / "tools" / "mps.sh").read_bytes())
    before = _tree(project)
    script = ["bash", "tools/gpu_allocation.sh"]
    env = f"ALLOCATION_DIR={tmp_path / 'allocation'}"

    def allocation(*args: str) -> str:
        return run(["env", env, *script, *args], project).stdout

    # asked for first, started first, though it sorts after CELL: one slot, so it also ends first
    first = "mamba2/np4-ds8-lr0.003-s0"
    assert "started 2 cells" in allocation("start", "workflow/presets/tiny.yaml", "1", first, CELL)
    waited = allocation("wait", "600")
    assert "finished" in waited and "metrics files: 2" in waited and "cells finished: 2 of 2" in waited
    logs = tmp_path / "allocation" / "logs" / "cells"
    assert _stamps(logs / "mamba2_np4-ds8-lr0.003-s0.log")[-1] <= _stamps(logs / "hybrid-0_np4-ds8-lr0.003-s0.log")[0]
    cache = project / ".cache" / "kernels" / "triton"  # where the cells' compiled kernels go
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "kernel.cubin").write_bytes(b"compiled")
    allocation("pack", str(tmp_path / "out"))

    assert _tree(project) == before
    parts = sorted((tmp_path / "out").glob("kernel_cache.txz.*"))
    assert [p.name for p in parts] == ["kernel_cache.txz.00"]
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(parts[0].read_bytes()))) as packed:
        assert packed.extractfile("./triton/kernel.cubin").read() == b"compiled"
    with tarfile.open(tmp_path / "out" / "allocation.tgz") as packed:
        names = packed.getnames()
    assert f"results/cells/{CELL}.json" in names and f"runs/{CELL}/history.csv" in names
    assert not any(name.endswith(".pt") for name in names)  # never checkpoints
    assert "logs/setup.txt" in names  # what ran where, for the study's allocation record
    # the study takes GPU cells only: this CPU pack is refused whole, in one line
    study = tmp_path / "study"
    (study / "cells").mkdir(parents=True)
    shutil.copyfile(project / "workflow" / "presets" / "tiny.yaml", study / "params.yaml")
    with pytest.raises(DataIntegrityError, match="a study cell runs the kernels on a GPU"):
        merge(tmp_path / "out", study)
    assert not any(study.rglob("*.json"))
    log = (tmp_path / "out" / "allocation.log").read_text()
    assert "rule mqar_data" in log and "rule train" in log and "rule evaluate" in log
    # a second start refuses to run over the first allocation's outputs
    refused = run(["env", env, *script, "start", "workflow/presets/tiny.yaml", "1", CELL], project, check=False)
    assert refused.returncode == 2 and "exists (an earlier allocation)" in refused.stderr


def test_a_confirm_job_decides_from_an_earlier_allocations_summaries_without_retraining(tmp_path):
    """The confirm job of a cell whose rate sweep a previous machine trained: its summaries come back
    from that allocation's pack (RESTORE), and nothing is trained again to rebuild them."""
    project = project_copy(tmp_path / "project")
    (project / "tools").mkdir()
    for name in ("gpu_allocation.sh", "mps.sh"):
        (project / "tools" / name).write_bytes((ROOT / "tools" / name).read_bytes())
    cells = ["mamba2/np4-ds8-lr0.003-s0", "mamba2/np8-ds8-lr0.003-s0"]

    def allocation(name: str, *args: str, restore: str = "", kernels: str = "") -> str:
        env = ["env", f"ALLOCATION_DIR={tmp_path / name}", f"RESTORE={restore}", f"KERNELS={kernels}"]
        return run([*env, "bash", "tools/gpu_allocation.sh", *args], project).stdout

    allocation("first", "start", "workflow/presets/tiny.yaml", "2", *cells)
    assert "metrics files: 2" in allocation("first", "wait", "600")
    cache = project / ".cache" / "kernels"
    (cache / "triton").mkdir(parents=True, exist_ok=True)
    (cache / "triton" / "kernel.cubin").write_bytes(b"compiled")
    allocation("first", "pack", str(tmp_path / "out1"))
    shutil.rmtree(cache)  # the next machine starts bare; the pack's kernels come with it

    pack = str(tmp_path / "out1" / "allocation.tgz")
    kernels = str(tmp_path / "out1" / "kernel_cache.txz")
    started = allocation(
        "second", "start", "workflow/presets/tiny.yaml", "2", f"{cells[1]}.confirm", restore=pack, kernels=kernels
    )
    assert "started 0 cells and 1 confirm jobs" in started
    assert (cache / "triton" / "kernel.cubin").read_bytes() == b"compiled"
    assert "confirm files: 1" in allocation("second", "wait", "600")
    allocation("second", "pack", str(tmp_path / "out2"))
    log = (tmp_path / "out2" / "allocation.log").read_text()
    assert "rule confirm" in log and "rule train" not in log
    with tarfile.open(tmp_path / "out2" / "allocation.tgz") as packed:
        assert f"results/cells/{cells[1]}.confirm.json" in packed.getnames()


def test_a_packed_kernel_cache_is_restored_whole_or_not_at_all(tmp_path):
    """`kernels PREFIX` unpacks a pack's xz parts into the cache folder; a truncated part leaves the
    folder empty (a cache only saves time: the run starts cold, and says so) instead of half-filled."""
    packed_from = tmp_path / "cache" / "triton"
    packed_from.mkdir(parents=True)
    (packed_from / "kernel.cubin").write_bytes(b"compiled" * 1000)
    (tmp_path / "work" / "logs").mkdir(parents=True)  # an allocation's scratch copy, nothing run
    (tmp_path / "work" / "params.yaml").write_text("{}\n")
    script = ["bash", str(ROOT / "tools" / "gpu_allocation.sh")]
    env = ["env", f"ALIGN_MAMBA_CACHE_DIR={tmp_path / 'cache'}", f"ALLOCATION_DIR={tmp_path / 'work'}"]
    run([*env, *script, "pack", str(tmp_path / "out")], tmp_path)
    shutil.rmtree(tmp_path / "cache")

    prefix = str(tmp_path / "out" / "kernel_cache.txz")
    restore = ["env", f"ALIGN_MAMBA_CACHE_DIR={tmp_path / 'restored'}", *script, "kernels", prefix]
    assert "restored" in run(restore, tmp_path).stdout
    assert (tmp_path / "restored" / "triton" / "kernel.cubin").read_bytes() == b"compiled" * 1000

    part = tmp_path / "out" / "kernel_cache.txz.00"
    part.write_bytes(part.read_bytes()[:-20])
    shutil.rmtree(tmp_path / "restored")
    damaged = run(restore, tmp_path)
    assert "damaged; starting cold" in damaged.stderr
    assert list((tmp_path / "restored").iterdir()) == []


def test_no_cell_starts_after_the_allocations_last_start_time(tmp_path):
    """STOP_STARTING_AFTER=0: the cells are listed as not started, none trains, the run ends;
    a value that is not whole seconds is one line before anything runs."""
    project = project_copy(tmp_path / "project")
    (project / "tools").mkdir()
    for name in ("gpu_allocation.sh", "mps.sh"):
        (project / "tools" / name).write_bytes((ROOT / "tools" / name).read_bytes())
    cells = ["mamba2/np4-ds8-lr0.003-s0", CELL]

    def allocation(stop: str, *args: str, check: bool = True):
        env = ["env", f"ALLOCATION_DIR={tmp_path / 'allocation'}", f"STOP_STARTING_AFTER={stop}"]
        return run([*env, "bash", "tools/gpu_allocation.sh", *args], project, check=check)

    refused = allocation("soon", "start", "workflow/presets/tiny.yaml", "1", *cells, check=False)
    assert refused.returncode == 2 and refused.stderr.strip() == "STOP_STARTING_AFTER must be whole seconds, got 'soon'"
    assert not (tmp_path / "allocation").exists()
    allocation("0", "start", "workflow/presets/tiny.yaml", "1", *cells)
    waited = allocation("0", "wait", "300").stdout
    assert "finished" in waited and "cells not started (STOP_STARTING_AFTER): 2" in waited
    not_started = (tmp_path / "allocation" / "logs" / "not_started.txt").read_text().split()
    assert not_started == [f"results/cells/{cell}.json" for cell in cells]
    assert not (tmp_path / "allocation" / "runs").exists()  # nothing trained
