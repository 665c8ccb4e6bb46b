"""The serial-vs-packed timing tool: what it runs, in which order, where, and what it records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from align_mamba.bench import packing
from align_mamba.core.errors import ConfigError
from align_mamba.recall.params import RecallParams, load_recall_params

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "workflow" / "presets" / "gpu_packing.yaml"


def _params() -> RecallParams:
    return load_recall_params(PRESET)


def test_warmup_covers_each_architecture_and_state_size_once():
    params = _params()
    chosen = packing.warmup_cells(params)
    expected = {(c.architecture, c.model.d_state, c.suffix) for c in params.cells}
    assert sorted((c.architecture, c.model.d_state, c.suffix) for c in chosen) == sorted(expected)
    assert len(chosen) == len(expected) < len(params.cells)


class FakeShell:
    """Stands in for the shell: records (commands, project) and writes each cell's metrics on `evaluate`."""

    def __init__(self, params: RecallParams, seconds: dict[str, float]):
        self.params, self.seconds, self.calls = params, seconds, []

    def __call__(self, commands: list[str], cwd: Path, log_path: Path) -> None:
        self.calls.append((commands, cwd.name))
        assert (cwd / "params.yaml").read_text() == PRESET.read_text() and (cwd / "src" / "align_mamba").is_dir()
        if "--until evaluate" in commands[0]:
            time.sleep(self.seconds[cwd.name])
            for cell in self.params.cells:
                (cwd / cell.metrics).parent.mkdir(parents=True, exist_ok=True)
                (cwd / cell.metrics).write_text("{}")


def _evaluate(slots: int, cores: int) -> list[str]:
    return [packing.snakemake_command("workflow/profiles/gpu-node", "evaluate", slots, cores)]


def test_measure_runs_data_warmups_then_serial_then_packed_in_separate_projects(tmp_path):
    params = _params()
    shell = FakeShell(params, {"serial": 0.2, "packed": 0.05})
    result = packing.measure_packing(ROOT, PRESET, tmp_path / "work", tmp_path / "out", slots=8, cores=4, run=shell)
    assert [(c[0].split(" --until ")[1].split()[0], project) for c, project in shell.calls[:2]] == [
        ("mqar_data", "serial"),
        ("mqar_data", "packed"),
    ]
    warmups, _ = shell.calls[2]  # one call: they run side by side
    assert len(warmups) == len(packing.warmup_cells(params))
    assert all(c.startswith("python -m align_mamba.recall.train") and c.endswith(".log") for c in warmups)
    configs = [json.loads(Path(c.split("--config ")[1].split()[0]).read_text()) for c in warmups]
    assert all(config["train"]["steps"] == packing.WARMUP_STEPS for config in configs)
    assert shell.calls[3:] == [(_evaluate(1, 4), "serial"), (_evaluate(8, 4), "packed")]
    assert result["cells"] == 8 and result["slots"] == 8
    assert result["serial_seconds"] >= 0.2 and 0.05 <= result["packed_seconds"] < result["serial_seconds"]
    assert result["speedup"] == pytest.approx(result["serial_seconds"] / result["packed_seconds"], rel=0.1)
    assert json.loads((tmp_path / "out" / "packing.json").read_text()) == result
    assert not (ROOT / "runs" / "warmup").exists()


def test_two_invocations_one_mode_each_merge_into_one_result(tmp_path):
    shell = FakeShell(_params(), {"serial": 0.1, "packed": 0.02})
    first = packing.measure_packing(ROOT, PRESET, tmp_path / "w", tmp_path / "out", 8, 4, ("serial",), run=shell)
    assert "serial_seconds" in first and "speedup" not in first
    second = packing.measure_packing(ROOT, PRESET, tmp_path / "w", tmp_path / "out", 8, 4, ("packed",), run=shell)
    assert second["serial_seconds"] == first["serial_seconds"] and second["speedup"] > 1
    assert [project for commands, project in shell.calls if "--until evaluate" in commands[0]] == ["serial", "packed"]
    other = packing.measure_packing(ROOT, PRESET, tmp_path / "w", tmp_path / "out", 4, 4, ("packed",), run=shell)
    assert "serial_seconds" not in other and "speedup" not in other  # other slots: the earlier run does not count


def test_missing_cells_and_cpu_grids_are_refused(tmp_path):
    class Lazy(FakeShell):
        def __call__(self, commands, cwd, log_path):
            if "--until evaluate" not in commands[0] or cwd.name == "serial":
                super().__call__(commands, cwd, log_path)

    with pytest.raises(ConfigError, match="packed run evaluated 0 of 8 cells"):
        packing.measure_packing(
            ROOT, PRESET, tmp_path / "w", tmp_path / "o", 8, 2, run=Lazy(_params(), {"serial": 0, "packed": 0})
        )
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text(PRESET.read_text().replace("device: cuda", "device: cpu"))
    with pytest.raises(ConfigError, match="run.device must be cuda"):
        packing.measure_packing(ROOT, cpu, tmp_path / "w2", tmp_path / "o2", 8, 2, run=lambda *a: None)


def test_a_malformed_earlier_result_is_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "packing.json").write_text("{not json")
    with pytest.raises(ConfigError, match="packing.json is not valid JSON.*remove it"):
        packing.measure_packing(ROOT, PRESET, tmp_path / "w", tmp_path / "out", 8, 2, run=lambda *a: None)


def test_a_failing_command_is_one_line_naming_its_log(tmp_path):
    with pytest.raises(ConfigError, match="`exit 3` failed with exit status 3.*see .*x.log"):
        packing.run_shell(["true", "exit 3"], tmp_path, tmp_path / "x.log")
    assert "$ true\n$ exit 3\n" in (tmp_path / "x.log").read_text()


def test_cli_refuses_a_single_slot(tmp_path, capsys):
    code = packing.run_cli(packing.main, ["--params", str(PRESET), "--out", str(tmp_path), "--slots", "1"])
    assert code == 2 and "--slots must be >= 2" in capsys.readouterr().err
