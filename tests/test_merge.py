"""recall.merge: a GPU allocation's pack goes into a study whole, or not at all.

The fixtures are two cells the study really ran on the H200 (results/study/cells) and the study's
params.yaml; the packs are built here as `tools/gpu_allocation.sh pack` lays them out."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from pipeline_helpers import ROOT

from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.recall.merge import main, merge

STUDY = ROOT / "results" / "study"
CELLS = ("mamba2/np64-ds64-lr0.01-s0", "hybrid-0_2/np256-ds64-lr0.001-s0")


def _metrics(cell_id: str) -> dict:
    return json.loads((STUDY / "cells" / f"{cell_id}.json").read_text())


def _pack(folder, files: dict[str, dict | bytes]):
    """A pack folder: allocation.tgz with results/cells/<name> for each file, logs, allocation.log."""
    folder.mkdir(parents=True)
    members = {
        f"results/cells/{name}": data if isinstance(data, bytes) else json.dumps(data).encode()
        for name, data in files.items()
    }
    members["logs/setup.txt"] = b"NVIDIA H200, 580.159.04, 143771 MiB\n"
    members["logs/cells.txt"] = "".join(f"results/cells/{cell}.json\n" for cell in CELLS).encode()
    with tarfile.open(folder / "allocation.tgz", "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (folder / "allocation.log").write_text("rule train\n")
    return folder


def _study(folder):
    (folder / "cells").mkdir(parents=True)
    (folder / "params.yaml").write_bytes((STUDY / "params.yaml").read_bytes())
    return folder


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_pack_merges_byte_for_byte_and_a_second_merge_changes_nothing(tmp_path):
    pack = _pack(tmp_path / "pack", {f"{cell}.json": _metrics(cell) for cell in CELLS})
    study = _study(tmp_path / "study")
    added, present, folder = merge(pack, study)
    assert sorted(added) == sorted(f"{cell}.json" for cell in CELLS) and present == []
    for cell in CELLS:
        assert json.loads((study / "cells" / f"{cell}.json").read_text()) == _metrics(cell)
    assert folder == study / "allocations" / "1"
    assert (folder / "runs.tgz").read_bytes() == (pack / "allocation.tgz").read_bytes()
    assert (folder / "cells_asked.txt").read_text().split() == list(CELLS)  # ids, not paths
    assert (folder / "setup.txt").read_text().startswith("NVIDIA H200")
    before = _files(study)
    added, present, _ = merge(pack, study)
    assert added == [] and len(present) == 2 and _files(study) == before  # no second allocation folder


@pytest.mark.parametrize(
    "change, error, message",
    [
        (lambda m: m.update(accuracy=0.5), DataIntegrityError, "differs from"),
        (lambda m: m.update(backend="reference", device="cpu"), DataIntegrityError, "kernels on a GPU"),
        (
            lambda m: m.update(train_device="cpu", train_backend="reference"),
            DataIntegrityError,
            "trained with backend 'reference'",
        ),
        (lambda m: m["cell"]["train"].update(steps=1000), ConfigError, "other settings than the study's"),
        (lambda m: m.update(accuracy=float("nan")), ConfigError, "accuracy must be in [0, 1]"),
        (lambda m: m.pop("slices"), ConfigError, "slices"),
    ],
    ids=["conflict", "cpu-evaluated", "cpu-trained", "other-settings", "nan", "incomplete"],
)
def test_a_pack_with_one_bad_file_merges_nothing(tmp_path, change, error, message):
    study = _study(tmp_path / "study")
    good, bad = CELLS
    existing = _metrics(bad)
    (study / "cells" / bad).parent.mkdir(parents=True)
    (study / "cells" / f"{bad}.json").write_text(json.dumps(existing))
    changed = _metrics(bad)
    change(changed)
    pack = _pack(tmp_path / "pack", {f"{good}.json": _metrics(good), f"{bad}.json": changed})
    before = _files(study)
    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")) as raised:
        merge(pack, study)
    assert "\n" not in str(raised.value)
    assert _files(study) == before  # the good cell was not written either


def test_a_cell_of_another_study_and_a_damaged_archive_are_one_line(tmp_path, capsys):
    study = _study(tmp_path / "study")
    foreign = _metrics(CELLS[0])
    foreign["cell"]["id"] = "mamba2/np64-ds64-lr0.01-s9"
    pack = _pack(tmp_path / "pack", {"mamba2/np64-ds64-lr0.01-s9.json": foreign})
    with pytest.raises(ConfigError, match="not a cell of the study's params.yaml"):
        merge(pack, study)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "allocation.tgz").write_bytes(b"\x1f\x8b truncated")
    (damaged / "allocation.log").write_text("")
    assert run_cli(main, ["--pack", str(damaged), "--study", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable gzip tar archive" in err and len(err.splitlines()) == 1


def test_a_confirm_rerun_is_the_cell_at_its_budget_factor_times_the_steps(tmp_path):
    """A real 2x rerun merges; the same file claiming its steps were the cell's own is refused."""
    name = "mamba2/np128-ds64-lr0.003-s0-x638412.confirm.json"
    confirm = json.loads((STUDY / "cells" / name).read_text())
    merge(_pack(tmp_path / "pack", {name: confirm}), _study(tmp_path / "study"))
    confirm["cell"]["train"]["steps"] //= confirm["budget_factor"]
    with pytest.raises(ConfigError, match="other settings than the study's"):
        merge(_pack(tmp_path / "pack2", {name: confirm}), _study(tmp_path / "study2"))


def test_the_command_line_names_each_merged_cell_and_the_next_commands(tmp_path, capsys):
    name = "mamba2/np128-ds64-lr0.003-s0-x638412.confirm.json"
    files = {f"{CELLS[0]}.json": _metrics(CELLS[0]), name: json.loads((STUDY / "cells" / name).read_text())}
    study = _study(tmp_path / "study")
    assert run_cli(main, ["--pack", str(_pack(tmp_path / "pack", files)), "--study", str(study)]) == 0
    out, err = capsys.readouterr()
    assert f"{CELLS[0]}: test 0.990, validation 0.991, 1250 steps" in err
    assert "mamba2/np128-ds64-lr0.003-s0-x638412.confirm: test 0.003" in err and "3000 steps" in err
    assert "merged 1 metrics file(s) and 1 confirm file(s)" in err
    assert out.startswith("next: python -m align_mamba.recall.schedule") and "align_mamba.report" in out
