"""The report's benchmark and secret-span sections, on outputs of the real tools run on tiny settings
(data generator, tagger train/evaluate, baseline scanners, bench, scan throughput), plus the
sections' arithmetic on hand-made inputs and the one-line notes of missing inputs."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from test_bench import TINY_LADDER, TINY_SHAPES
from test_report import ACCURACY, metrics_json, write_cell

from align_mamba.bench.__main__ import main as bench_main
from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.recall.params import ReportSettings
from align_mamba.report import write_report
from align_mamba.report.__main__ import main as report_main
from align_mamba.report.bench import bench_metrics, crossover_table, load_bench, training_sentence, wrapper_tax_table
from align_mamba.report.experiments import load_runs
from align_mamba.report.render import Image, Table, Text, build_sections
from align_mamba.report.secrets import (
    boundary_accuracy_table,
    comparison_sentence,
    headline_table,
    load_secrets,
    mismatched_splits,
    per_case_table,
    per_format_table,
    recall_figure,
)
from align_mamba.secrets.baselines import main as baselines_main
from align_mamba.secrets.data import load_secret_split
from align_mamba.secrets.data.__main__ import main as data_main
from align_mamba.secrets.evaluate import main as evaluate_main
from align_mamba.secrets.throughput import main as throughput_main
from align_mamba.secrets.train import main as train_main

TOOLS = [
    t
    for t, module in (("detect-secrets", "detect_secrets"), ("credsweeper", "credsweeper"))
    if importlib.util.find_spec(module) is not None
]
SPLITS = ("test", "test_unseen", "test_decoys")
TAGGERS = {  # name -> train flags: a briefly trained transformer, an untrained-ish bidirectional Mamba
    "transformer": ["--variant", "transformer", "--n-heads", "2", "--window", "16", "--steps", "20"],
    "bimamba": ["--variant", "bimamba", "--d-state", "8", "--headdim", "8", "--chunk-size", "16", "--steps", "2"],
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """cells/, bench/ (with scan_throughput.csv) and secrets/ written by the real tools."""
    root = tmp_path_factory.mktemp("sections")
    data, secrets, bench = root / "data", root / "secrets", root / "bench"
    assert (
        run_cli(
            data_main,
            [
                "--out",
                str(data),
                "--seed",
                "0",
                "--train-files",
                "12",
                "--val-files",
                "2",
                "--test-files",
                "4",
                "--unseen-files",
                "3",
                "--decoy-files",
                "2",
                "--length-buckets",
                "1024",
                "2048",
                "--train-max-length",
                "2048",
            ],
        )
        == 0
    )
    for name, flags in TAGGERS.items():
        run = root / "runs" / name
        assert (
            run_cli(
                train_main,
                [
                    "--data",
                    str(data),
                    "--out",
                    str(run),
                    "--d-model",
                    "16",
                    "--n-layers",
                    "1",
                    "--batch-size",
                    "4",
                    "--eval-every",
                    "100",
                    "--device",
                    "cpu",
                    "--crop-len",
                    "128",
                    "--chunk-len",
                    "512",
                    "--overlap",
                    "64",
                    *flags,
                ],
            )
            == 0
        )
        assert (
            run_cli(
                evaluate_main,
                [
                    "--data",
                    str(data),
                    "--checkpoint",
                    str(run / "model.pt"),
                    "--out",
                    str(secrets / name),
                    "--device",
                    "cpu",
                ],
            )
            == 0
        )
    if TOOLS:
        assert (
            run_cli(baselines_main, ["--data", str(data), "--out", str(secrets / "baselines"), "--tools", *TOOLS]) == 0
        )
    assert (
        run_cli(
            bench_main,
            [
                "--out",
                str(bench),
                *TINY_SHAPES,
                "--modes",
                "forward",
                "decode",
                "--mixers",
                "attention",
                "raw_attention",
                "mamba2",
                "--architectures",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--ladder-rungs",
                "0",
                "4",
                *TINY_LADDER,
            ],
        )
        == 0
    )
    assert (
        run_cli(
            throughput_main,
            [
                "--checkpoint",
                str(root / "runs" / "transformer" / "model.pt"),
                "--out",
                str(bench / "scan_throughput.csv"),
                "--sizes-mb",
                "0.001",
                "0.002",
                "--kinds",
                "log",
                "--tools",
                "--device",
                "cpu",
                "--repeats",
                "1",
                "--warmup",
                "0",
            ],
        )
        == 0
    )
    for (arch, d_state), by_np in ACCURACY.items():
        for num_pairs, seeds in by_np.items():
            for seed, accuracy in enumerate(seeds):
                write_cell(root / "cells", metrics_json(arch, num_pairs, d_state, seed, accuracy))
    return {"root": root, "data": data, "secrets": secrets, "bench": bench, "cells": root / "cells"}


@pytest.fixture(scope="module")
def report(outputs) -> Path:
    out = outputs["root"] / "report"
    assert (
        report_main(
            [
                "--cells",
                str(outputs["cells"]),
                "--out",
                str(out),
                "--capacity_threshold",
                "0.9",
                "--bench",
                str(outputs["bench"]),
                "--secrets",
                str(outputs["secrets"]),
            ]
        )
        == 0
    )
    return out


def scores(outputs, system: str, split: str) -> dict:
    folder = outputs["secrets"] / ("baselines/" + system if system in TOOLS else system)
    return json.loads((folder / split / "scores.json").read_text())


def section(sections, title: str):
    (found,) = [s for s in sections if s.title == title]
    return found


def tables_of(found) -> list[pd.DataFrame]:
    return [block.frame for block in found.blocks if isinstance(block, Table)]


# --- the whole report from real tool outputs ----------------------------------------------------


def test_report_has_both_sections_with_their_figures(report):
    markdown = (report / "report.md").read_text()
    titles = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert titles[-2:] == ["Benchmark", "Secret spans"] and len(titles) == 5
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert {
        "figures/bench_throughput.png",
        "figures/bench_memory.png",
        "figures/recall_by_position.png",
        "figures/recall_by_length.png",
    } <= set(referenced)
    assert len(referenced) == 6 and all((report / ref).is_file() for ref in referenced)
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "<h2>Secret spans</h2>" in page
    bench = markdown[markdown.index("## Benchmark") : markdown.index("## Secret spans")]
    assert "WARNING: the benchmark ran on cpu" in bench  # a CPU run is flagged
    assert "Rung 4 is align_mamba.recall.train's step." in bench and bench.count("than rung 0") == 1
    assert "0.001 MiB file: MiB/s" in bench and "No scan throughput" not in bench
    assert "0.001 MiB file: findings / planted" in bench


def test_benchmark_section_tables_come_from_the_bench_files(outputs):
    sections, metrics = build_sections(
        load_runs(outputs["cells"]), None, "cmd", ReportSettings(), bench_dir=outputs["bench"]
    )
    environment, crossover, tax, ladder, provenance, throughput = tables_of(section(sections, "Benchmark"))
    summary = json.loads((outputs["bench"] / "summary.json").read_text())
    assert dict(zip(environment[""], environment["value"]))["device"] == summary["device"]
    assert set(crossover["mode"]) == {"forward (prefill)", "decode step"}
    assert tax["layer"].tolist() == ["attention"] and tax["compared with"].tolist() == ["raw_attention"]
    assert tax.iloc[0, 2] == f"{summary['wrapper_tax']['attention']['median_ratio']:,.2f}"
    assert tax.iloc[0, 3] == f"{summary['wrapper_tax']['attention']['max_ratio']:,.2f}"
    assert ladder["rung"].tolist() == [0, 4]
    mixers = pd.read_csv(outputs["bench"] / "mixers.csv")
    assert provenance["rows"].sum() == len(mixers)
    csv = pd.read_csv(outputs["bench"] / "scan_throughput.csv")
    rate = csv[csv["size_mb"] == 0.002]["bytes"].sum() / 2**20 / csv[csv["size_mb"] == 0.002]["seconds"].sum()
    assert throughput["system"].tolist() == ["tagger"] and throughput.iloc[0, -2] == f"{rate:,.2f}"
    at = csv[csv["size_mb"] == 0.002]
    assert throughput.iloc[0, -1] == f"{at['findings'].sum()} / {at['planted'].sum()}"
    assert metrics["bench.training_speedup"] == pytest.approx(summary["training_speedup"]["speedup_vs_naive"], abs=5e-4)
    assert metrics["bench.training_speedup_rung"] == 4


def test_headline_table_holds_every_system_with_its_scores(outputs):
    results = load_secrets(outputs["secrets"])
    table = headline_table(results.runs).set_index("system")
    assert table.index.tolist() == sorted(TAGGERS) + TOOLS and results.notes == ()
    for system in table.index:
        test, unseen, decoys = (scores(outputs, system, split) for split in SPLITS)
        row = table.loc[system]
        assert row["test: span P / R / F1"] == " / ".join(
            f"{test[k]:.3f}" for k in ("span_precision", "span_recall", "span_f1")
        )
        assert row["test_unseen: hit rate"] == f"{unseen['hit_rate']:.3f}"
        assert row["test: byte F1"] == f"{test['byte_f1']:.3f}"
        assert row["test_decoys: false alarms / MB"] == f"{decoys['false_alarms_per_mb']:,.1f}"
        assert decoys["n_true"] == 0 and decoys["false_alarms_per_mb"] == pytest.approx(
            decoys["false_alarms"] / (decoys["bytes"] / 1e6)
        )
        seconds = sum(s["wall_seconds"] for s in (test, unseen, decoys))
        assert row["MB/s"] == f"{sum(s['bytes'] for s in (test, unseen, decoys)) / 1e6 / seconds:,.4f}"
    assert table.loc["transformer", "ran on"] == "sdpa on cpu" and table.loc["bimamba", "kind"] == "tagger"


def test_per_format_table_counts_and_marks_held_out_formats_from_the_labels(outputs):
    table = per_format_table(load_secrets(outputs["secrets"]).breakdowns)
    for split in ("test", "test_unseen"):
        truth = Counter(span.format for f in load_secret_split(outputs["data"], split) for span in f.spans)
        rows = table[table["split"] == split]
        assert dict(zip(rows["format"], rows["secrets"])) == dict(truth)
        assert set(rows["held out"]) == ({"yes"} if split == "test_unseen" else {""})
    manifest = json.loads((outputs["data"] / "manifest.json").read_text())
    assert set(table[table["held out"] == "yes"]["format"]) <= set(manifest["formats"]["heldout"])
    row = table[table["split"] == "test"].iloc[0]
    record = next(r for r in scores(outputs, "transformer", "test")["per_format"] if r["format"] == row["format"])
    assert row["transformer"] == f"{record['recall']:.2f} [{record['wilson_low']:.2f}, {record['wilson_high']:.2f}]"
    assert record["recall"] == pytest.approx(record["recalled"] / record["true"])


def test_boundary_table_holds_every_system_per_format_from_the_scores(outputs):
    results = load_secrets(outputs["secrets"])
    table = boundary_accuracy_table(results.boundary)
    for split in ("test", "test_unseen"):
        truth = Counter(span.format for f in load_secret_split(outputs["data"], split) for span in f.spans)
        for system in [*TAGGERS, *TOOLS]:
            rows = table[(table["split"] == split) & (table["system"] == system)]
            assert dict(zip(rows["format"], rows["secrets"])) == dict(truth)
            for record in scores(outputs, system, split)["boundary"]:
                row = rows[rows["format"] == record["format"]].iloc[0]
                assert row["IoU median [q25, q75]"] == (
                    f"{record['iou_median']:.2f} [{record['iou_q25']:.2f}, {record['iou_q75']:.2f}]"
                )
                assert (row["IoU ≥ 0.9"], row["overlapped"]) == (f"{record['iou_ge_90']:.2f}", record["located"])
    assert set(table[table["held out"] == "yes"]["split"]) == {"test_unseen"}
    sections, _ = build_sections(
        load_runs(outputs["cells"]), None, "cmd", ReportSettings(), secrets_dir=outputs["secrets"]
    )
    tables = tables_of(section(sections, "Secret spans"))
    assert any("IoU median [q25, q75]" in frame.columns for frame in tables)


def test_per_case_table_counts_each_true_span_by_how_it_was_written(outputs):
    breakdowns = load_secrets(outputs["secrets"]).breakdowns
    table = per_case_table(breakdowns)
    for split in ("test", "test_unseen"):
        truth = Counter(
            next((c.format for c in f.cases if c.start < s.end and s.start < c.end), "plain")
            for f in load_secret_split(outputs["data"], split)
            for s in f.spans
        )
        rows = table[table["split"] == split]
        assert dict(zip(rows["written as"], rows["secrets"])) == dict(truth)
        assert rows["written as"].iloc[0] == "plain" or "plain" not in truth
    assert per_case_table(breakdowns[breakdowns["breakdown"] != "by_case"]).empty


def test_boundary_of_old_scores_files_is_a_note(outputs, tmp_path):
    shutil.copytree(outputs["secrets"] / "transformer", tmp_path / "transformer")
    for split in SPLITS:
        path = tmp_path / "transformer" / split / "scores.json"
        record = json.loads(path.read_text())
        del record["boundary"], record["by_case"]  # both written since the hard cases exist
        path.write_text(json.dumps(record))
    results = load_secrets(tmp_path, ["transformer"])
    assert results.boundary.empty and len(results.runs) == 3
    assert [n for n in results.notes if n.startswith("No boundary accuracy for transformer:")]


@pytest.mark.parametrize("breakdown, key", [("by_decile", "target_decile"), ("by_length", "length_bucket")])
def test_recall_figures_have_one_line_per_system(outputs, breakdown, key):
    breakdowns = load_secrets(outputs["secrets"]).breakdowns
    axes = [ax for ax in recall_figure(breakdowns, breakdown).axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["test (in-distribution formats)", "test_unseen (held-out formats)"]
    for ax, split in zip(axes, ("test", "test_unseen")):
        assert [c.get_label() for c in ax.containers] == sorted(TAGGERS) + TOOLS
        records = [r for r in scores(outputs, "bimamba", split)[breakdown] if r[key] is not None]
        line = ax.containers[0].lines[0]  # bimamba: its recalls, in bucket order
        assert list(line.get_ydata()) == pytest.approx([r["recall"] for r in sorted(records, key=lambda r: r[key])])


def test_recall_figure_accepts_wilson_bounds_a_rounding_error_inside_the_recall(outputs):
    breakdowns = load_secrets(outputs["secrets"]).breakdowns.copy()
    perfect = breakdowns["recall"] == 1.0
    assert perfect.any()
    breakdowns.loc[perfect, "wilson_high"] = 1.0 - 1e-12  # what float rounding of the Wilson formula gives
    axes = [ax for ax in recall_figure(breakdowns, "by_decile").axes if ax.get_visible()]
    assert all(ax.containers for ax in axes)


def test_metrics_json_gains_the_headline_keys_and_keeps_the_old_ones(outputs, report, tmp_path):
    metrics = json.loads((report / "metrics.json").read_text())
    plain = write_report(outputs["cells"], tmp_path / "plain", 0.9)
    assert {k: metrics[k] for k in plain} == plain and list(metrics) == sorted(metrics)
    for system in [*TAGGERS, *TOOLS]:  # headline numbers, rounded to 3 decimals
        assert metrics[f"secrets.{system}.test.span_f1"] == round(scores(outputs, system, "test")["span_f1"], 3)
        assert metrics[f"secrets.{system}.test_unseen.span_recall"] == round(
            scores(outputs, system, "test_unseen")["span_recall"], 3
        )
        assert metrics[f"secrets.{system}.test_decoys.false_alarms_per_mb"] == round(
            scores(outputs, system, "test_decoys")["false_alarms_per_mb"], 3
        )
    summary = json.loads((outputs["bench"] / "summary.json").read_text())
    assert metrics["bench.training_speedup"] == round(summary["training_speedup"]["speedup_vs_naive"], 3)
    assert metrics["bench.max_wrapper_tax"] == round(summary["wrapper_tax"]["attention"]["max_ratio"], 3)
    assert all(v is None or isinstance(v, str) or round(v, 3) == v for v in metrics.values())


@pytest.mark.skipif("credsweeper" not in TOOLS, reason="credsweeper not installed")
def test_comparison_sentence_states_the_real_numbers(outputs):
    sentence = comparison_sentence(load_secrets(outputs["secrets"]).runs)
    best = max(sorted(TAGGERS), key=lambda name: scores(outputs, name, "test")["span_f1"])
    ours, theirs = scores(outputs, best, "test"), scores(outputs, "credsweeper", "test")
    assert f"**{best}**" in sentence and f"span F1 {ours['span_f1']:.3f}" in sentence
    assert f"CredSweeper's {theirs['span_f1']:.3f}" in sentence


# --- missing inputs -----------------------------------------------------------------------------


def test_missing_inputs_give_one_line_each_and_no_metrics(outputs, tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "mixers.csv").write_text("x\n")
    metrics = write_report(
        outputs["cells"], tmp_path / "out", 0.9, bench_dir=tmp_path / "bench", secrets_dir=tmp_path / "nothing"
    )
    assert not [k for k in metrics if k.startswith(("bench.", "secrets."))]
    markdown = (tmp_path / "out" / "report.md").read_text()
    bench = markdown[markdown.index("## Benchmark\n") : markdown.index("## Secret spans")].strip().splitlines()
    assert len(bench) == 3 and bench[2].startswith("No benchmark results: ")
    assert "train_step.csv, summary.json" in bench[2] and "`python -m align_mamba.bench --out" in bench[2]
    notes = [line for line in markdown[markdown.index("## Secret spans") :].splitlines()[1:] if line]
    assert len(notes) == 2 and "python -m align_mamba.secrets.evaluate" in notes[0]
    assert "python -m align_mamba.secrets.baselines" in notes[1]


def test_partial_inputs_keep_what_is_there(outputs, tmp_path):
    for name in TAGGERS:
        shutil.copytree(outputs["secrets"] / name, tmp_path / "secrets" / name)
    for name in ("mixers.csv", "train_step.csv", "summary.json"):
        shutil.copy(outputs["bench"] / name, tmp_path / name)
    runs = load_runs(outputs["cells"])
    sections, metrics = build_sections(
        runs, None, "cmd", ReportSettings(), tmp_path, tmp_path / "secrets", ["transformer", "hybrid"]
    )
    texts = [b.body for b in section(sections, "Secret spans").blocks if isinstance(b, Text)]
    assert texts[0].startswith("No results for tagger hybrid") and texts[1].startswith("No baseline results")
    assert "No comparison with CredSweeper on test: CredSweeper was not scored on it." in texts
    assert [k for k in metrics if k.startswith("secrets.")] == [
        "secrets.transformer.test.span_f1",
        "secrets.transformer.test_decoys.false_alarms_per_mb",
        "secrets.transformer.test_unseen.span_recall",
    ]
    bench = section(sections, "Benchmark")
    assert sum(isinstance(b, Image) for b in bench.blocks) == 2
    assert bench.blocks[-1].body.startswith(f"No scan throughput ({tmp_path / 'scan_throughput.csv'})")


def test_a_malformed_scores_file_is_named(outputs, tmp_path):
    shutil.copytree(outputs["secrets"] / "transformer", tmp_path / "transformer")
    (tmp_path / "transformer" / "test" / "scores.json").write_text('{"files": 3}')
    with pytest.raises(ConfigError, match=r"transformer/test/scores\.json: missing or invalid '"):
        load_secrets(tmp_path)


# --- arithmetic on hand-made inputs -------------------------------------------------------------


def _run(system, kind, span_tp, n_true=10, f1=0.5, files=4):
    return {
        "system": system,
        "kind": kind,
        "split": "test",
        "ran_on": "",
        "files": files,
        "bytes": 1000,
        "n_true": n_true,
        "n_pred": 10,
        "span_tp": span_tp,
        "span_precision": 0.5,
        "span_recall": span_tp / n_true,
        "span_f1": f1,
        "hit_rate": 1.0,
        "byte_f1": 0.5,
        "wall_seconds": 1.0,
        "false_alarms_per_mb": 0.0,
    }


def test_comparison_sentence_by_hand():
    # Wilson 95% by hand: 10/10 -> [0.7225, 1.0], 2/10 -> [0.0567, 0.5098]: apart.
    runs = pd.DataFrame(
        [_run("b", "tagger", 10, f1=0.9), _run("a", "tagger", 9, f1=0.8), _run("credsweeper", "baseline", 2, f1=0.3)]
    )
    sentence = comparison_sentence(runs)
    assert "best tagger, **b**, reaches span F1 0.900" in sentence and "0.600 above CredSweeper's 0.300" in sentence
    assert "[0.72, 1.00] and [0.06, 0.51], do not overlap." in sentence
    # 9/10 -> [0.5958, 0.9821] and 4/10 -> [0.1682, 0.6873] overlap; tied taggers are named.
    runs = pd.DataFrame(
        [_run("a", "tagger", 9, f1=0.4), _run("b", "tagger", 9, f1=0.4), _run("credsweeper", "baseline", 4, f1=0.4)]
    )
    sentence = comparison_sentence(runs)
    assert "**a** (tied with b)" in sentence and "the same as CredSweeper's 0.400" in sentence
    assert "[0.60, 0.98] and [0.17, 0.69], overlap" in sentence
    assert comparison_sentence(runs[runs["kind"] == "tagger"]).endswith("CredSweeper was not scored on it.")
    assert mismatched_splits(runs) == []
    assert mismatched_splits(pd.DataFrame([_run("a", "tagger", 1), _run("b", "tagger", 1, files=5)])) == ["test"]


def test_boundary_accuracy_table_by_hand():
    def row(system, kind, split, fmt, median, located=2, start=1.5, end=0.0):
        return {
            "system": system,
            "kind": kind,
            "split": split,
            "format": fmt,
            "true": 2,
            "located": located,
            "iou_q25": median - 0.1,
            "iou_median": median,
            "iou_q75": median + 0.05,
            "iou_ge_50": 1.0,
            "iou_ge_90": 0.5,
            "mean_start_error": start,
            "mean_end_error": end,
        }

    boundary = pd.DataFrame(
        [
            row("credsweeper", "baseline", "test_unseen", "glpat", 0.9, located=0, start=None, end=None),
            row("b", "tagger", "test", "aws", 0.8),
            row("a", "tagger", "test_unseen", "glpat", 0.85),
            row("a", "tagger", "test", "aws", 0.95),
            row("credsweeper", "baseline", "test_decoys", "aws", 0.5),  # not a scored split
        ]
    )
    table = boundary_accuracy_table(boundary)
    assert table[["split", "format", "system", "held out"]].values.tolist() == [
        ["test", "aws", "a", ""],
        ["test", "aws", "b", ""],
        ["test_unseen", "glpat", "a", "yes"],
        ["test_unseen", "glpat", "credsweeper", "yes"],
    ]
    assert table.iloc[0]["IoU median [q25, q75]"] == "0.95 [0.85, 1.00]"
    assert table.iloc[0]["start / end error (bytes)"] == "1.5 / 0.0" and table.iloc[0]["IoU ≥ 0.9"] == "0.50"
    assert table.iloc[3]["start / end error (bytes)"] == "—" and table.iloc[3]["overlapped"] == 0


def test_bench_tables_and_metrics_by_hand():
    summary = {
        "crossover": {
            "forward": {
                "16": {"length": 90.5, "lower": 64, "upper": 128},
                "64": {"length": None, "lower": None, "upper": 64},
            },
            "train": {
                "16": {"length": None, "lower": 256, "upper": None},
                "64": {"length": None, "lower": None, "upper": None},
            },
        },
        "wrapper_tax": {
            "mamba2": {
                "max_ratio": 1.25,
                "median_ratio": 1.01,
                "mode": "train",
                "seq_len": 1024,
                "d_state": 64,
                "shapes": 4,
            },
            "attention": {"max_ratio": 1.5, "mode": "forward", "seq_len": 256, "d_state": None, "shapes": 2},
        },
        "training_speedup": {"rung": 6, "description": "+ CUDA graphs", "ms_per_step": 2.0, "speedup_vs_naive": 7.5},
    }
    table = crossover_table(summary)
    assert table.iloc[:, 2].tolist() == ["≈ 90", "≤ 64", "> 256", "—"]
    assert table["measured"].iloc[0] == "between L = 64 and 128"
    tax = wrapper_tax_table(summary).set_index("layer")
    assert (
        tax.loc["mamba2", "max at"] == "train, L = 1024, N = 64"
        and tax.loc["attention", "max at"] == "forward, L = 256"
    )
    assert tax.loc["mamba2"].iloc[1] == "1.01" and tax.loc["attention"].iloc[1] == "—"
    assert bench_metrics(summary) == {
        "bench.training_speedup": 7.5,
        "bench.training_speedup_rung": 6,
        "bench.crossover.forward.ds16": 90.5,
        "bench.wrapper_tax.mamba2": 1.25,
        "bench.wrapper_tax.attention": 1.5,
        "bench.max_wrapper_tax": 1.5,
    }
    ladder = pd.DataFrame(
        {
            "rung": [0, 4, 6],
            "status": ["ok", "skipped", "ok"],
            "ms_per_step": [15.0, None, 2.0],
            "speedup_vs_naive": [1.0, None, 7.5],
            "description": ["naive", "+ fused AdamW (= align_mamba.recall.train's step)", "+ CUDA graphs"],
        }
    )
    sentence = training_sentence(summary, ladder)
    assert sentence.startswith("Rung 0 takes 15.00 ms per step; rung 6 is 7.50× faster than rung 0.")
    # a slower rung is called slower, each ratio against the rung before and against rung 0, once
    plain = training_sentence(
        summary,
        pd.DataFrame(
            {
                "rung": [0, 2, 4],
                "status": ["ok"] * 3,
                "ms_per_step": [10.0, 2.0, 4.4],
                "speedup_vs_naive": [1, 5, 2.27],
                "description": ["naive", "+ bf16", "+ fused AdamW (= align_mamba.recall.train's step)"],
            }
        ),
    )
    assert plain == (
        "Rung 0 takes 10.00 ms per step; rung 2 is 5.00× faster than rung 0; rung 4 is 2.20× slower "
        "than rung 2 (2.27× faster than rung 0). Rung 4 is align_mamba.recall.train's step."
    )
    assert sentence.endswith("Rung 4 is align_mamba.recall.train's step; it did not run (skipped).")
    older = ladder.assign(description=["naive", "+ fused AdamW", "+ CUDA graphs"])  # a ladder without the mark
    assert training_sentence(summary, older).endswith(
        "No rung of this ladder is marked as align_mamba.recall.train's step."
    )
    assert bench_metrics({"crossover": {}, "wrapper_tax": {}, "training_speedup": None}) == {}


def test_loaded_bench_reads_scan_throughput_only_when_present(outputs, tmp_path):
    assert load_bench(outputs["bench"]).scan_throughput is not None
    for name in ("mixers.csv", "train_step.csv", "summary.json"):
        shutil.copy(outputs["bench"] / name, tmp_path / name)
    assert load_bench(tmp_path).scan_throughput is None


def _levers_json(kernel_time):
    row = {"slots": 8, "status": "ok", "reason": "", "first_step_seconds": 20.0, "ms_per_cell_step": None}
    return {
        "slots": 8,
        "device": "NVIDIA H200",
        "rows": [
            {
                **row,
                "n_layers": 18,
                "lever": "eager",
                "cell_steps_per_s": 20.0,
                "speedup_vs_eager": 1.0,
                "kernel_time": [],
            },
            {
                **row,
                "n_layers": 18,
                "lever": "cuda_graph",
                "cell_steps_per_s": 50.0,
                "speedup_vs_eager": 2.5,
                "kernel_time": kernel_time,
            },
            {
                **row,
                "n_layers": 18,
                "lever": "mps",
                "status": "skipped",
                "reason": "no MPS",
                "cell_steps_per_s": None,
                "speedup_vs_eager": None,
            },
        ],
    }


def test_levers_show_beside_eager_with_the_fastest_paths_kernel_time(outputs, tmp_path):
    for name in ("mixers.csv", "train_step.csv", "summary.json"):
        shutil.copy(outputs["bench"] / name, tmp_path / name)
    kernel_time = [
        {"category": "SSD scan", "ms_per_step": 5.0, "share": 0.5},
        {"category": "norm", "ms_per_step": 5.0, "share": 0.5, "largest": [{"name": "rms_bwd", "ms_per_step": 3.0}]},
    ]
    (tmp_path / "levers.json").write_text(json.dumps(_levers_json(kernel_time)))
    sections, _ = build_sections(load_runs(outputs["cells"]), None, "cmd", ReportSettings(), tmp_path)
    levers, kernels = tables_of(section(sections, "Benchmark"))[-2:]
    assert levers["lever"].tolist() == ["eager", "cuda_graph", "mps"]
    assert levers["speedup vs eager"].tolist() == ["1.00x", "2.50x", "—"]
    assert levers["status"].tolist()[-1] == "skipped: no MPS"
    assert kernels["fastest lever"].unique().tolist() == ["cuda_graph"] and kernels["share"].tolist() == ["50%", "50%"]
    assert kernels["largest kernels (ms per step)"].tolist() == ["", "rms_bwd (3.00)"]  # none recorded: blank

    (tmp_path / "levers.json").write_text(json.dumps({"rows": [{"lever": "eager"}]}))
    with pytest.raises(DataIntegrityError, match="levers.json: expected rows with n_layers"):
        load_bench(tmp_path)
