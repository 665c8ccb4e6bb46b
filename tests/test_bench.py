"""The benchmark stage on the CPU: timing helpers on hand-built inputs, the crossover and wrapper-tax
arithmetic, config errors, OOM rows, decode steps of whole models, a tiny end-to-end run through the
CLI, and the report's figures and tables."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import align_mamba.bench.timing as timing
from align_mamba.bench import BenchConfig, batch_size, crossover, crossovers, load_bench_config, median, run_bench
from align_mamba.bench.__main__ import main
from align_mamba.bench.decode import cross_attention_cache, cross_attention_step, decoder_caches, model_step
from align_mamba.bench.run import COLUMNS
from align_mamba.bench.summary import Crossover, wrapper_tax
from align_mamba.bench.timing import Workload, is_oom, time_call
from align_mamba.bench.train_step import COLUMNS as LADDER_COLUMNS
from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.mixers import CrossAttention, SelfAttention
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models import build_model
from align_mamba.report.bench import ladder_table, load_bench, memory_figure, provenance_table, throughput_figure

CPU = torch.device("cpu")
TINY = dict(
    device="cpu",
    lengths=(32, 64),
    decode_contexts=(16, 32),
    tokens_per_batch=128,
    d_model=32,
    d_states=(16,),
    headdim=16,
    n_heads=2,
    chunk_size=16,
    n_layers=2,
    encoder_layers=1,
    hybrid_positions=(0,),
    repeats=1,
    warmup=0,
    ladder_rungs=(),
)


# --- timing -------------------------------------------------------------------------------------


def test_median_of_hand_built_lists():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_time_call_excludes_warmup_and_takes_the_median_of_fresh_inputs(monkeypatch):
    """A fake clock: each run advances it by a scripted duration; warm-ups take 100 ms."""
    clock = [0.0]
    durations = iter([0.100, 0.100, 0.005, 0.001, 0.003])  # 2 warm-ups, then 3 repeats
    made, seen = [], []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def make():
        made.append(object())
        return made[-1]

    def run(inputs):
        seen.append(inputs)
        clock[0] += next(durations)

    result = time_call(Workload(make, run), CPU, repeats=3, warmup=2)
    assert result.times_ms == pytest.approx((5.0, 1.0, 3.0))
    assert result.median_ms == pytest.approx(3.0)
    assert math.isnan(result.peak_mib)  # the CPU records no peak
    assert len(made) == 5 and len({id(x) for x in seen}) == 5 and seen == made  # fresh inputs every call


def test_is_oom():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_batch_size():
    assert batch_size(1024, 64) == 16
    assert batch_size(1000, 64) == 15
    assert batch_size(10, 64) == 1


# --- crossover and wrapper tax ------------------------------------------------------------------


def test_crossover_interpolates_in_log_space():
    # log(m/a) is -log 2 at L=4 and +log 2 at L=16: zero halfway in log L, at L = 8
    found = crossover([1, 4, 16], [1.0, 1.0, 1.0], [4.0, 2.0, 0.5])
    assert found.lower == 4 and found.upper == 16 and found.length == pytest.approx(8.0)


def test_crossover_edge_cases():
    assert crossover([1, 2], [1.0, 2.0], [3.0, 4.0]) == Crossover(None, 2, None)  # never faster
    assert crossover([1, 2], [5.0, 5.0], [3.0, 4.0]) == Crossover(None, None, 1)  # faster from the start
    # an unmeasured (NaN) point is skipped: the bracket is then 1..4
    found = crossover([1, 2, 4], [1.0, math.nan, 4.0], [2.0, 2.0, 2.0])
    assert (found.lower, found.upper) == (1, 4) and found.length == pytest.approx(2.0)


def _row(name, mode, seq_len, tokens_per_s, kind="mixer", d_state=16, status="ok"):
    return {
        "kind": kind,
        "name": name,
        "mode": mode,
        "seq_len": seq_len,
        "tokens_per_s": tokens_per_s,
        "d_state": d_state,
        "status": status,
        "backend": "reference",
        "fused": False,
        "dtype": "fp32",
        "peak_mib": math.nan,
        "state_mib": math.nan,
        "reason": "",
    }


def crossing_rows() -> pd.DataFrame:
    rows = [_row("mamba2", "forward", n, 1.0) for n in (1, 4, 16)]
    rows += [_row("attention", "forward", n, a, d_state=None) for n, a in ((1, 4.0), (4, 2.0), (16, 0.5))]
    rows += [_row("mamba2", "train", n, 1.0) for n in (1, 4)]
    rows += [_row("attention", "train", n, 3.0, d_state=None) for n in (1, 4)]
    return pd.DataFrame(rows).astype({"d_state": "Int64"})


def test_crossovers_per_mode_from_rows():
    found = crossovers(crossing_rows())
    assert found["forward"]["16"]["length"] == pytest.approx(8.0)
    assert found["train"]["16"] == {"length": None, "lower": 4, "upper": None}


def test_wrapper_tax_is_the_largest_raw_over_wrapped_ratio():
    rows = pd.DataFrame(
        [
            _row("mamba2", "forward", 8, 100.0),
            _row("raw_mamba2", "forward", 8, 150.0, "raw"),
            _row("mamba2", "train", 8, 50.0),
            _row("raw_mamba2", "train", 8, 55.0, "raw"),
            _row("attention", "forward", 8, 10.0, d_state=None),
            _row("raw_attention", "forward", 8, 9.0, "raw", d_state=None),
        ]
    )
    tax = wrapper_tax(rows)
    assert tax["mamba2"]["max_ratio"] == pytest.approx(1.5) and tax["mamba2"]["mode"] == "forward"
    assert tax["attention"]["max_ratio"] == pytest.approx(0.9) and tax["attention"]["d_state"] is None
    assert "mamba1" not in tax


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mixers": ["mamba4"]}, "bench.mixers: unknown name 'mamba4'"),
        ({"lengths": ["64"]}, "bench.lengths must be a list of int"),
        ({"lengths": [128, 64]}, "strictly increasing"),
        ({"tokens_per_batch": True}, "bench.tokens_per_batch must be int"),
        ({"ladder_rungs": [1, 2]}, "must include rung 0"),
        ({"architectures": ["hybrid"], "hybrid_positions": [5]}, "outside"),
        ({"modes": ["prefill"]}, "bench.modes: unknown name"),
        ({"speed": 1}, "unknown key"),
    ],
)
def test_bad_config_is_one_clear_line(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_bench_config(values)
    assert "\n" not in str(info.value)


def test_cli_unknown_mixer_prints_one_error_line(tmp_path, capsys):
    code = run_cli(main, ["--out", str(tmp_path / "b"), "--device", "cpu", "--mixers", "attention", "mamba4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: bench.mixers: unknown name 'mamba4'") and "\n" not in err
    assert not (tmp_path / "b").exists()


# --- decode steps -------------------------------------------------------------------------------


def test_cross_attention_step_equals_forward():
    torch.manual_seed(0)
    module = CrossAttention(16, 2).double()
    x, memory = torch.randn(3, 1, 16, dtype=torch.float64), torch.randn(3, 7, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            cross_attention_step(module, x, cross_attention_cache(module, memory)),
            module(x, memory),
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("variant", ["mamba2", "transformer", "hybrid"])
def test_model_step_reproduces_full_logits(variant):
    """Stepping a whole model token by token from empty caches gives full_logits at every position."""
    torch.manual_seed(0)
    config = ModelConfig(
        variant=variant,
        d_model=16,
        n_layers=2,
        d_state=8,
        headdim=8,
        chunk_size=4,
        n_heads=2,
        encoder_layers=1,
        hybrid_positions=(1,) if variant == "hybrid" else (),
    )
    model = build_model(config, "reference").double().eval()
    inputs = torch.randint(10, 8192, (2, 9))
    context = torch.randint(10, 8192, (2, 5)) if variant == "hybrid" else None
    with torch.no_grad():
        full = model.full_logits(inputs, context)
        memory = model.encode(context) if context is not None else None
        caches = decoder_caches(model, 2, 9, torch.float64, memory)
        stepped = torch.cat([model_step(model, caches, inputs[:, t : t + 1], t) for t in range(9)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-9, atol=1e-9)


# --- end to end ---------------------------------------------------------------------------------


# the smallest benchmark that still has every mode, length pair and ladder rung (also the report's tests)
TINY_SHAPES = ["--device", "cpu", "--lengths", "32", "64", "--decode_contexts", "16", "32", "--tokens-per-batch", "128"]
TINY_SHAPES += ["--d_model", "32", "--d-states", "16", "--headdim", "16", "--n-heads", "2", "--chunk-size", "16"]
TINY_LADDER = ["--ladder_d_model", "32", "--ladder-n-layers", "1", "--ladder-d-state", "16", "--ladder-headdim", "16"]
TINY_LADDER += ["--ladder-batch", "2", "--ladder-seq-len", "64", "--ladder-num-pairs", "8"]


def test_bench_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "bench"
    argv = [
        "--out",
        str(out),
        *TINY_SHAPES,
        "--n-layers",
        "2",
        "--encoder-layers",
        "1",
        "--hybrid-positions",
        "0",
        "--mixers",
        "attention",
        "mamba2_reference",
        "raw_mamba2",
        "--architectures",
        "mamba2",
        "hybrid",
        "--repeats",
        "1",
        "--warmup",
        "1",
        "--ladder-rungs",
        "0",
        "1",
        "2",
        "3",
        "6",
        *TINY_LADDER,
    ]
    assert run_cli(main, argv) == 0
    rows = pd.read_csv(out / "mixers.csv", keep_default_na=False, na_values=[""])
    assert list(rows.columns) == COLUMNS
    assert len(rows) == 5 * 3 * 2  # 5 cases (one d_state) x 3 modes x 2 lengths
    ok = rows[rows["status"] == "ok"]
    assert set(ok["name"]) == {"attention", "mamba2_reference", "mamba2", "hybrid"}
    assert set(ok["mode"]) == {"forward", "train", "decode"}
    for column in ("median_ms", "tokens_per_s"):
        assert (ok[column] > 0).all() and ok[column].map(math.isfinite).all()
    decode = ok[ok["mode"] == "decode"]
    assert (decode["state_mib"] > 0).all() and (decode["tokens"] == decode["batch"]).all()
    assert (rows["batch"] == (128 // rows["seq_len"]).clip(lower=1)).all()
    raw = rows[rows["name"] == "raw_mamba2"]
    assert (raw["status"] == "skipped").all() and raw["reason"].str.contains("CUDA").all()

    ladder = pd.read_csv(out / "train_step.csv")
    assert list(ladder.columns) == LADDER_COLUMNS and ladder["rung"].tolist() == [0, 1, 2, 3, 6]
    ran = ladder[ladder["status"] == "ok"]
    assert ran["rung"].tolist() == [0, 1, 2] and (ran["ms_per_step"] > 0).all()
    assert ran["speedup_vs_naive"].iloc[0] == pytest.approx(1.0)
    assert (ladder["dtype"] == "fp32").all()  # bf16 rungs run in fp32 on the CPU, as train.py does
    skipped = ladder.set_index("rung").loc[[3, 6], "reason"]
    assert "kernels" in skipped[3] and "cuda" in skipped[6]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["device_type"] == "cpu" and summary["versions"]["torch"] == torch.__version__
    assert summary["training_speedup"]["rung"] == 2 and summary["config"]["lengths"] == [32, 64]
    assert set(summary["crossover"]) == set() and summary["rows"]["skipped"] == 6


def test_oom_is_a_row_and_later_cases_still_run(tmp_path, monkeypatch):
    forward = SelfAttention.forward

    def out_of_memory_at_64(self, x):
        if x.shape[1] == 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(SelfAttention, "forward", out_of_memory_at_64)
    cfg = BenchConfig(
        **{
            **TINY,
            "lengths": (32, 64, 128),
            "modes": ("forward",),
            "mixers": ("attention", "mamba2_reference"),
            "architectures": (),
        }
    )
    summary = run_bench(cfg, tmp_path)
    rows = pd.read_csv(tmp_path / "mixers.csv", keep_default_na=False, na_values=[""])
    attention = rows[rows["name"] == "attention"].set_index("seq_len")
    assert attention["status"].to_dict() == {32: "ok", 64: "oom", 128: "skipped"}
    assert "out of memory" in attention.loc[64, "reason"] and attention.loc[128, "reason"] == "out of memory at 64"
    assert math.isnan(attention.loc[64, "median_ms"])
    assert (rows[rows["name"] == "mamba2_reference"]["status"] == "ok").all()
    assert summary["rows"] == {"ok": 4, "oom": 1, "skipped": 1}


# --- report -------------------------------------------------------------------------------------


def _lines(ax):
    curves = [line for line in ax.get_lines() if line.get_gid() != "crossover"]
    return curves, [line for line in ax.get_lines() if line.get_gid() == "crossover"]


def test_throughput_figure_one_line_per_mixer_and_the_crossover_marked():
    fig = throughput_figure(crossing_rows())
    forward, train = [ax for ax in fig.axes if ax.get_visible()]
    curves, marks = _lines(forward)
    assert sorted(line.get_label() for line in curves) == ["attention", "mamba2"]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == pytest.approx(8.0)
    curves, marks = _lines(train)  # the curves do not cross in train: no marker
    assert len(curves) == 2 and not marks


def test_report_pieces_from_a_bench_directory(tmp_path):
    run_bench(
        BenchConfig(
            **{
                **TINY,
                "mixers": ("attention", "mamba2_reference"),
                "architectures": (),
                "modes": ("forward", "decode"),
                "ladder_rungs": (0, 3),
                "ladder_d_model": 32,
                "ladder_n_layers": 1,
                "ladder_d_state": 16,
                "ladder_headdim": 16,
                "ladder_batch": 2,
                "ladder_seq_len": 64,
                "ladder_num_pairs": 8,
            }
        ),
        tmp_path,
    )
    results = load_bench(tmp_path)
    memory = memory_figure(results.mixers)
    forward, decode = [ax for ax in memory.axes if ax.get_visible()]
    assert not forward.get_lines() and "no peak MiB" in forward.texts[0].get_text()  # CPU: no peaks
    assert len(decode.get_lines()) == 2  # cache / state sizes are known on the CPU too
    table = ladder_table(results.ladder)
    assert table["rung"].tolist() == [0, 3] and table.loc[0, "× naive"] == "1.00"
    assert table.loc[1, "ran"].startswith("skipped: ")
    provenance = provenance_table(results.mixers)
    assert provenance.set_index("name").loc["mamba2_reference", "backend"] == "reference"
    assert provenance["rows"].sum() == len(results.mixers)


def test_params_file_sets_defaults_and_flags_override(tmp_path):
    from align_mamba.bench.__main__ import parse_config

    params = tmp_path / "params.yaml"
    params.write_text("bench:\n  device: cpu\n  lengths: [32, 64]\n  d_model: 48\n  ladder_rungs: []\n")
    cfg, out, _ = parse_config(
        ["--params", str(params), "--out", str(tmp_path / "o"), "--d_model", "32", "--mixers", "attention"]
    )
    assert (cfg.lengths, cfg.d_model, cfg.mixers, cfg.ladder_rungs) == ((32, 64), 32, ("attention",), ())
    params.write_text("bench:\n  lengths: 64\n")
    with pytest.raises(ConfigError, match="bench.lengths must be a list of int"):
        parse_config(["--params", str(params), "--out", str(tmp_path / "o")])


# --- merging runs -------------------------------------------------------------------------------


def test_merge_joins_runs_of_one_setup_and_refuses_mixed_ones(tmp_path):
    from align_mamba.bench.merge import merge_runs

    ladder = dict(
        ladder_rungs=(0, 2),
        ladder_d_model=32,
        ladder_n_layers=1,
        ladder_d_state=16,
        ladder_headdim=16,
        ladder_batch=2,
        ladder_seq_len=64,
        ladder_num_pairs=8,
    )
    run_bench(
        BenchConfig(
            **{**TINY, "mixers": ("attention", "mamba2_reference"), "architectures": (), "modes": ("forward",)}
        ),
        tmp_path / "mixers",
    )
    run_bench(
        BenchConfig(**{**TINY, "mixers": (), "architectures": ("mamba2",), "modes": ("train",), **ladder}),
        tmp_path / "rest",
    )
    parts = [pd.read_csv(tmp_path / name / "mixers.csv") for name in ("mixers", "rest")]
    mixers, rungs, summary = merge_runs([tmp_path / "mixers", tmp_path / "rest"])
    assert len(mixers) == len(parts[0]) + len(parts[1]) == 2 * 2 + 2
    assert rungs["rung"].tolist() == [0, 2]
    assert summary["rows"]["ok"] == len(mixers) and summary["training_speedup"]["rung"] == 2
    assert summary["merged_from"] == [str(tmp_path / "mixers"), str(tmp_path / "rest")]

    stopped = tmp_path / "stopped"  # a run cut by a time limit: its rows, no summary
    stopped.mkdir()
    (stopped / "mixers.csv").write_text((tmp_path / "mixers" / "mixers.csv").read_text())
    with pytest.raises(DataIntegrityError, match="no summary.json"):
        merge_runs([stopped, tmp_path / "rest"])
    mixers, _, summary = merge_runs([stopped, tmp_path / "rest"], provenance_from=tmp_path / "rest")
    assert len(mixers) == 6 and summary["config"][0] is None and summary["provenance_from"] == str(tmp_path / "rest")

    with pytest.raises(ConfigError, match="more than one run holds a training ladder"):
        merge_runs([tmp_path / "rest", tmp_path / "rest"])
    edited = json.loads((tmp_path / "rest" / "summary.json").read_text())
    (tmp_path / "rest" / "summary.json").write_text(json.dumps({**edited, "device": "another GPU"}))
    with pytest.raises(ConfigError, match="differs .* in device"):
        merge_runs([tmp_path / "mixers", tmp_path / "rest"])


def test_unfused_ladder_rungs_need_an_in_proj_width_causal_conv1d_accepts(monkeypatch):
    import align_mamba.bench.train_step as train_step

    # ladder_d_model 64, headdim 32: in_proj = 2·128 + 2·16 + 128/32 = 292, not a multiple of 8
    odd = BenchConfig(ladder_d_model=64, ladder_d_state=16, ladder_headdim=32)
    even = BenchConfig(ladder_d_model=64, ladder_d_state=16, ladder_headdim=16)  # 256 + 32 + 8 = 296
    monkeypatch.setattr(train_step, "has_causal_conv1d", lambda: True)
    assert "got 292" in train_step.unfused_mamba_unavailable(odd, "kernels")
    assert train_step.unfused_mamba_unavailable(even, "kernels") is None
    assert train_step.unfused_mamba_unavailable(odd, "reference") is None  # the reference has no such limit
    monkeypatch.setattr(train_step, "has_causal_conv1d", lambda: False)  # unfused then convolves in PyTorch
    assert train_step.unfused_mamba_unavailable(odd, "kernels") is None
    rungs = {rung.rung: rung for rung in train_step.RUNGS}
    cuda = torch.device("cuda")
    assert train_step.skip_reason(rungs[0], None, "width 292", cuda) == "width 292"  # rungs 0-2 run unfused
    assert train_step.skip_reason(rungs[3], None, "width 292", cuda) == ""  # the fused path copies the slice
