"""The packed lever benchmark (bench.levers through bench.packing --levers): what each row runs,
how throughput and speedups are computed, and what a failure or a machine without MPS records."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from align_mamba.bench import levers, packing

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def kernel_cache_in_tmp(tmp_path, monkeypatch):
    """measure_levers points its workers' kernel cache through the process environment: give it a
    folder of the test's own, undone after the test, so the setting never reaches later tests."""
    monkeypatch.setenv(levers.CACHE_ENV, str(tmp_path / "kernels"))


class FakeWorkers:
    """Stands in for the shell: each worker 'trains' at `rate[lever]` steps/s, all in one span."""

    def __init__(self, rate: dict[str, float], fail: str = ""):
        self.rate, self.fail, self.calls = rate, fail, []

    def __call__(self, commands: list[str], cwd: Path, log_path: Path) -> None:
        self.calls.append(commands)
        for command in commands:
            words = shlex.split(command)
            first = words.index("align_mamba.bench.levers") + 1  # after any VAR=value prefix
            args = dict(zip(words[first::2], words[first + 1 :: 2]))
            lever = args["--lever"]
            if lever == self.fail:
                raise levers.ConfigError(f"`{command}` failed with exit status 1 in {cwd}; see {log_path}")
            seconds = int(args["--steps"]) / self.rate[lever]
            result = {"start": 100.0, "end": 100.0 + seconds, "steps": int(args["--steps"])}
            result.update(ms_per_step=1e3 * seconds / result["steps"], first_step_seconds=12.5, captured=False)
            result["fused"] = levers.uses_fused(lever)
            Path(args["--result"]).write_text(json.dumps(result))


def _measure(tmp_path, run, lever_names=levers.LEVERS, **kw):
    return levers.measure_levers(
        ROOT, tmp_path / "out", tmp_path / "work", 4, (2,), lever_names, steps=10, run=run, device="fake", **kw
    )


def test_every_lever_runs_slots_workers_and_compares_with_eager(tmp_path, monkeypatch):
    monkeypatch.setattr(levers, "start_mps", lambda root: ({"CUDA_MPS_PIPE_DIRECTORY": "/tmp/p"}, ""))
    monkeypatch.setattr(levers, "stop_mps", lambda root: None)
    monkeypatch.setattr(levers, "conv_installed", lambda: False)
    run = FakeWorkers({"eager": 10, "cuda_graph": 20, "compile": 12, "mps": 13, "chunk_64": 11, "combined": 30})
    result = _measure(tmp_path, run)
    rows = {row["lever"]: row for row in result["rows"]}
    assert list(rows) == list(levers.LEVERS) and all(len(commands) == 4 for commands in run.calls)
    assert len(run.calls) == len(levers.LEVERS) - 1  # no causal-conv1d here: fused is a row, not a run
    assert rows["fused"]["status"] == "skipped" and "causal-conv1d is not installed" in rows["fused"]["reason"]
    assert all(row["steps"] == 10 for row in rows.values())
    assert rows["eager"]["cell_steps_per_s"] == pytest.approx(40.0)  # 4 workers x 10 steps/s
    assert rows["combined"]["speedup_vs_eager"] == pytest.approx(3.0)
    assert rows["cuda_graph"]["cuda_graph"] and rows["compile"]["compile"] == "default"
    assert rows["combined"]["mps"] and rows["combined"]["cuda_graph"] and not rows["cuda_graph"]["mps"]
    assert " CUDA_MPS_PIPE_DIRECTORY=/tmp/p " in run.calls[3][0]  # the mps lever's workers
    assert (
        rows["chunk_64"]["chunk_size"] == 64
        and rows["eager"]["chunk_size"] == levers.SHAPES[2].model()["chunk_size"] != 64
    )
    assert not any("CUDA_MPS" in c for c in run.calls[1])
    # every worker runs with the threads a Snakemake job of the train rule gets
    assert all(c.startswith("OMP_NUM_THREADS=1 ") and " MKL_NUM_THREADS=1 " in c for cs in run.calls for c in cs)
    assert all(" --shape 2 " in c and "--index 0 " in c for c in (calls[0] for calls in run.calls))
    saved = json.loads((tmp_path / "out" / "levers.json").read_text())
    assert saved["rows"] == result["rows"] and {"n_layers", "lever", "cell_steps_per_s", "speedup_vs_eager"} <= set(
        saved["rows"][0]
    )


def test_without_mps_and_with_a_failing_lever_the_rows_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(levers, "start_mps", lambda root: ({}, "mps: nvidia-cuda-mps-control not found"))
    run = FakeWorkers({"eager": 10, "cuda_graph": 20, "chunk_64": 11}, fail="compile")
    rows = {row["lever"]: row for row in _measure(tmp_path, run)["rows"]}
    assert rows["mps"]["status"] == "skipped" and "not found" in rows["mps"]["reason"]
    assert rows["compile"]["status"] == "failed" and "exit status 1" in rows["compile"]["reason"]
    assert rows["compile"]["speedup_vs_eager"] is None and rows["cuda_graph"]["speedup_vs_eager"] == 2.0


def test_a_later_invocation_adds_its_rows_to_the_same_file(tmp_path):
    _measure(tmp_path, FakeWorkers({"eager": 10}), ("eager",))
    result = _measure(tmp_path, FakeWorkers({"cuda_graph": 25}), ("cuda_graph",))
    assert [(r["lever"], r["speedup_vs_eager"]) for r in result["rows"]] == [("eager", 1.0), ("cuda_graph", 2.5)]


def test_the_workers_threads_are_the_train_rules():
    """Snakemake exports OMP_NUM_THREADS & co = a job's threads; the workers must match the rule."""
    rule = (ROOT / "workflow" / "rules" / "train.smk").read_text().split("rule train:", 1)[1]
    threads = re.search(r"^    threads: (\d+)$", rule, re.MULTILINE)
    assert threads and int(threads.group(1)) == levers.JOB_THREADS


def test_rows_written_with_other_worker_threads_are_not_merged(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = {"slots": 4, "device": "fake", "host": levers.platform.node(), "rows": [{"n_layers": 2, "lever": "eager"}]}
    (out / "levers.json").write_text(json.dumps(old))  # no worker_threads: a file from before they were set
    result = _measure(tmp_path, FakeWorkers({"cuda_graph": 25}), ("cuda_graph",))
    assert [r["lever"] for r in result["rows"]] == ["cuda_graph"] and result["worker_threads"] == 1


def test_with_causal_conv1d_the_fused_lever_runs_and_the_others_stay_unfused(tmp_path, monkeypatch):
    monkeypatch.setattr(levers, "conv_installed", lambda: True)
    monkeypatch.setattr(levers, "start_mps", lambda root: ({"CUDA_MPS_PIPE_DIRECTORY": "/tmp/p"}, ""))
    monkeypatch.setattr(levers, "stop_mps", lambda root: None)
    run = FakeWorkers({"eager": 10, "fused": 16, "combined": 18})
    rows = {r["lever"]: r for r in _measure(tmp_path, run, ("eager", "fused", "combined"))["rows"]}
    assert rows["fused"]["status"] == "ok" and rows["fused"]["speedup_vs_eager"] == pytest.approx(1.6)
    assert (rows["eager"]["fused"], rows["fused"]["fused"], rows["combined"]["fused"]) == (False, True, True)


FAKE_CONV = "import sys; sys.path.insert(0, {path!r}); from align_mamba.bench import levers; from align_mamba.core.backends import has_causal_conv1d; "


@pytest.mark.parametrize("hide, seen", [(False, True), (True, False)])
def test_hiding_causal_conv1d_makes_the_worker_see_a_machine_without_it(tmp_path, hide, seen):
    """A stand-in causal_conv1d package on sys.path (the real one needs CUDA): hidden, every import of it
    and its submodules fails as on a machine without it, so mamba-ssm and align_mamba pick the unfused path."""
    package = tmp_path / "causal_conv1d"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cpp_functions.py").write_text("")
    code = FAKE_CONV.format(path=str(tmp_path)) + ("levers.hide_causal_conv1d(); " if hide else "")
    code += "print(has_causal_conv1d())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(seen)


def test_hiding_causal_conv1d_after_mamba_ssm_imported_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", object())
    with pytest.raises(RuntimeError, match="before mamba_ssm is imported"):
        levers.hide_causal_conv1d()


def test_the_lever_settings_are_the_train_settings():
    assert levers.lever_train("eager", "default") == {"cuda_graph": False, "compile": "none"}
    assert levers.lever_train("combined", "max-autotune-no-cudagraphs") == {
        "cuda_graph": True,
        "compile": "max-autotune-no-cudagraphs",
    }


def test_packing_without_params_or_levers_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = packing.run_cli(packing.main, ["--out", str(tmp_path)])
    assert code == 2 and "--params is required (the grid to time), unless --levers is given" in capsys.readouterr().err


@pytest.mark.gpu
def test_two_workers_train_the_2_layer_cell_eager_and_graph_captured(tmp_path, monkeypatch):
    """On a GPU: the real workers, 3 timed steps each; both rows ok, the graph captured."""
    monkeypatch.chdir(ROOT)
    result = levers.measure_levers(
        ROOT, tmp_path / "out", tmp_path / "work", 2, (2,), ("eager", "cuda_graph"), steps=3, warmup=5
    )
    rows = {row["lever"]: row for row in result["rows"]}
    assert rows["eager"]["status"] == "ok" and rows["cuda_graph"]["status"] == "ok", rows
    assert rows["cuda_graph"]["captured"] and rows["cuda_graph"]["speedup_vs_eager"] > 0


def test_a_worker_on_the_cpu_times_its_steps_and_profiles_where_they_go(tmp_path):
    """The real worker (2-layer shape, reference backend): its result has the timed span and the
    first worker's kernel-time breakdown, shares summing to 1 over known categories."""
    data = levers.write_data(levers.SHAPES[2], tmp_path / "data")
    result_path = tmp_path / "worker-0.json"
    args = ["--shape", "2", "--lever", "eager", "--index", "0", "--slots", "1", "--data", str(data)]
    args += ["--barrier", str(tmp_path / "barrier"), "--result", str(result_path), "--steps", "1", "--warmup", "1"]
    assert levers.main([*args, "--profile-steps", "1", "--device", "cpu", "--batch", "4"]) == 0
    result = json.loads(result_path.read_text())
    assert result["end"] > result["start"] and result["steps"] == 1 and not result["captured"]
    shares = {row["category"]: row["share"] for row in result["kernel_time"]}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert set(shares) <= {label for label, _ in levers.KERNEL_CATEGORIES} | {"other"}
    assert {"matmul", "elementwise"} <= set(shares)  # on the CPU the reference scan is aten ops too
    for row in result["kernel_time"]:  # the heaviest members of each category, which sum to no more than it
        largest = [k["ms_per_step"] for k in row["largest"]]
        assert 1 <= len(largest) <= levers.TOP_KERNELS and largest == sorted(largest, reverse=True)
        assert sum(largest) <= row["ms_per_step"] + 5e-4 * (len(largest) + 1)  # each rounded to 3 decimals
        assert all(levers.category(k["name"]) == row["category"] for k in row["largest"])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("_chunk_scan_fwd_kernel", "SSD scan"),
        ("_state_passing_bwd_kernel", "SSD scan"),
        ("triton_red_fused_add_sum_0", "compiled (Inductor)"),
        ("void at::native::(anonymous namespace)::conv_depthwise2d_forward_kernel<float>", "causal conv"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize", "matmul"),
        ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float>", "cat / copy"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::AddFunctor<float>>", "elementwise"),
        ("_layer_norm_fwd_1pass_kernel", "norm"),
        ("aten::mm", "matmul"),
        ("aten::cat", "cat / copy"),
        ("something_else", "other"),
    ],
)
def test_kernel_names_fall_into_their_categories(name, expected):
    assert levers.category(name) == expected
