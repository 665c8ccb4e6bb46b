"""The report stage on hand-made metrics files: CIs, capacity, hypotheses, outputs, errors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from align_mamba.core.errors import ConfigError
from align_mamba.report import (
    capacity_table, format_mean_ci, hypothesis_table, load_grid, mean_ci, summarize, write_report,
)
from align_mamba.report.__main__ import main
from align_mamba.report.tables import breakdown, breakdown_display, cells_display

SRC = Path(__file__).resolve().parents[1] / "src"
ARCHITECTURES = {"mamba2": ("mamba2", []), "hybrid-0_2": ("hybrid", [0, 2])}
# accuracy per seed (0, 1), by hand: (architecture, d_state) → {num_pairs: (seed 0, seed 1)}
ACCURACY = {
    ("mamba2", 16): {16: (0.7, 0.8), 64: (0.5, 0.6), 128: (0.1, 0.2)},  # never ≥ 0.9: capacity none
    ("mamba2", 64): {16: (0.99, 1.0), 64: (0.8, 0.9), 128: (0.05, 0.07)},  # capacity 16
    ("hybrid-0_2", 16): {16: (1.0, 1.0), 64: (0.95, 0.97), 128: (0.85, 0.95)},  # mean 0.9 exactly: ≥ 128
    ("hybrid-0_2", 64): {16: (1.0, 1.0), 64: (0.99, 0.99), 128: (0.96, 0.94)},
}
DISTANCES = ("1-1", "2-3", "4-7", "8-15", "16-31")  # "16-31" sorts before "2-3" as text


def metrics_json(arch: str, num_pairs: int, d_state: int, seed: int, accuracy: float,
                 backend: str = "kernels", device: str = "cuda") -> dict:
    """A metrics file as `python -m align_mamba.recall.evaluate` writes it; the first decile is half as good."""
    variant, positions = ARCHITECTURES[arch]
    deciles = [{"bucket": f"{10 * d}-{10 * d + 10}%", "accuracy": accuracy * (0.5 if d == 0 else 1), "count": 10}
               for d in range(10)]
    distances = [{"bucket": b, "accuracy": accuracy, "count": 5} for b in DISTANCES]
    own = {"data": f"data/mqar/np{num_pairs}", "num_pairs": num_pairs, "accuracy": accuracy,
           "exact_match": accuracy / 2, "sequences": 100, "queries": 1600,
           "by_key_decile": deciles, "by_distance": distances}
    ssm = 2 * 64 * d_state * 4
    attention = len(positions) * 2 * 64 * 4 * num_pairs
    return {"cell": f"{arch}-np{num_pairs}-ds{d_state}-s{seed}", "architecture": arch, "seed": seed,
            "model": {"variant": variant, "name": "", "hybrid_positions": positions, "d_state": d_state,
                      "d_model": 64, "n_layers": 4},
            "num_pairs": num_pairs, "accuracy": accuracy, "exact_match": accuracy / 2,
            "train": {"best_step": 900, "best_val_accuracy": accuracy, "backend": backend, "device": device},
            "backend": backend, "device": device,
            "state_size_floats": {"ssm": ssm, "attention": attention, "total": ssm + attention},
            "parameters": 812345, "wall_seconds": 3.2, "slices": [own]}


def write_cell(root: Path, metrics: dict) -> Path:
    path = root / metrics["cell"] / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


@pytest.fixture
def cells_dir(tmp_path) -> Path:
    """2 architectures × 3 num_pairs × 2 d_state × 2 seeds, plus a train.json that must be skipped."""
    root = tmp_path / "cells"
    for (arch, d_state), by_np in ACCURACY.items():
        for num_pairs, seeds in by_np.items():
            for seed, accuracy in enumerate(seeds):
                write_cell(root, metrics_json(arch, num_pairs, d_state, seed, accuracy))
    (root / "train.json").write_text(json.dumps({"cell": "x", "best_step": 3}))
    return root


def summary_row(summary: pd.DataFrame, arch: str, num_pairs: int, d_state: int) -> pd.Series:
    rows = summary[(summary["architecture"] == arch) & (summary["num_pairs"] == num_pairs)
                   & (summary["d_state"] == d_state)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_mean_and_ci_of_one_cell_by_hand(cells_dir):
    row = summary_row(summarize(load_grid(cells_dir).cells), "mamba2", 64, 64)  # seeds 0.8 and 0.9
    half = 12.706 * math.sqrt(((0.8 - 0.85) ** 2 + (0.9 - 0.85) ** 2) / 1) / math.sqrt(2)
    assert row["acc_mean"] == pytest.approx(0.85)
    assert row["acc_ci"] == pytest.approx(half) and half == pytest.approx(0.635, abs=1e-3)
    assert row["em_mean"] == pytest.approx(0.425) and row["n"] == 2


def test_train_accuracy_is_averaged_over_seeds_and_shown_as_a_dash_where_it_was_not_measured(cells_dir):
    for seed, train_accuracy in ((0, 0.7), (1, 0.9)):
        path = cells_dir / f"mamba2-np64-ds64-s{seed}" / "metrics.json"
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({**metrics, "train_accuracy": train_accuracy, "train_examples_checked": 1000}))
    summary = summarize(load_grid(cells_dir).cells)
    assert summary_row(summary, "mamba2", 64, 64)["train_acc_mean"] == pytest.approx(0.8)
    shown = cells_display(summary).set_index(["architecture", "num_pairs", "d_state"])["train accuracy (mean)"]
    assert shown[("mamba2", 64, 64)] == "0.800" and shown[("mamba2", 16, 64)] == "—"
    bad = cells_dir / "mamba2-np16-ds64-s0" / "metrics.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), "train_accuracy": 1.5}))
    with pytest.raises(ConfigError, match="train_accuracy must be in"):
        load_grid(cells_dir)


def test_ci_uses_t_table_then_normal_and_one_seed_has_none():
    assert mean_ci([0.5, 0.7, 0.9])[1] == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    values = [0.0, 1.0] * 20  # n = 40: beyond the table, 1.96
    assert mean_ci(values)[1] == pytest.approx(1.96 * pd.Series(values).std() / math.sqrt(40))
    mean, half, n = mean_ci([0.7])
    assert (mean, n) == (0.7, 1) and math.isnan(half)
    assert format_mean_ci(mean, half, n) == "0.700 (n=1)"
    assert format_mean_ci(0.85, 0.0635, 2, percent=True) == "85.0% ± 6.3%"


def test_capacity_is_largest_passing_num_pairs(cells_dir):
    capacity = capacity_table(summarize(load_grid(cells_dir).cells), 0.9).set_index(["architecture", "d_state"])
    assert (capacity.loc[("mamba2", 16), "capacity"], capacity.loc[("mamba2", 16), "label"]) == (0, "none")
    assert (capacity.loc[("mamba2", 64), "capacity"], capacity.loc[("mamba2", 64), "label"]) == (16, "16")
    assert capacity.loc[("hybrid-0_2", 16), "label"] == "≥ 128"  # mean of 0.85 and 0.95 reaches 0.9
    assert capacity.loc[("hybrid-0_2", 64), "state_at_capacity"] == 2 * 64 * 64 * 4 + 2 * 2 * 64 * 4 * 128
    stricter = capacity_table(summarize(load_grid(cells_dir).cells), 0.96).set_index(["architecture", "d_state"])
    assert stricter.loc[("hybrid-0_2", 16), "label"] == "64"


def test_hypotheses_show_not_run_or_measured(cells_dir):
    table = hypothesis_table(summarize(load_grid(cells_dir).cells))
    assert {"hypothesis (expected)", "measured (mean ± 95% CI)"} <= set(table.columns)
    measured = dict(zip(table["hybrid_positions"], table["measured (mean ± 95% CI)"]))
    assert measured["[0]"] == "not run" and measured["[8, 16]"] == "not run"
    assert measured["[]"].startswith("6.0% ± ")  # mamba2 at np128 ds64: 0.05 and 0.07
    assert measured["[0, 2]"].startswith("95.0% ± ")
    assert dict(zip(table["hybrid_positions"], table["hypothesis (expected)"]))["[0, 2]"] == "~95%"


def test_breakdown_at_largest_num_pairs_mean_over_seeds_in_numeric_order(cells_dir):
    grid = load_grid(cells_dir)
    deciles = breakdown(grid, "by_key_decile")
    assert set(deciles["series"]) == {"mamba2 (np128, ds64)", "hybrid-0_2 (np128, ds64)"}
    first = deciles[(deciles["architecture"] == "mamba2") & (deciles["bucket"] == "0-10%")].iloc[0]
    assert first["accuracy"] == pytest.approx(0.03) and first["count"] == 20 and first["seeds"] == 2
    assert breakdown_display(breakdown(grid, "by_distance"))["bucket"].tolist() == list(DISTANCES)


def test_cli_writes_complete_self_contained_report(cells_dir, tmp_path):
    out = tmp_path / "report"
    assert main(["--cells", str(cells_dir), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == sorted(metrics)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    assert metrics["cells"] == 24 and metrics["capacity.mamba2.ds16"] == 0 and metrics["capacity.mamba2.ds64"] == 16
    assert metrics["accuracy.mamba2"] == pytest.approx(sum(sum(s) for (a, _), n in ACCURACY.items() if a == "mamba2"
                                                           for s in n.values()) / 12)
    assert len(pd.read_csv(out / "cells.csv")) == 24
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert ".png" not in page and "<link" not in page
    markdown = (out / "report.md").read_text()
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(referenced) == 4 and all((out / ref).is_file() for ref in referenced)
    titles = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert titles == ["What was run", "Every cell", "The cliff", "Heatmap", "Capacity", "Where recall fails",
                      "Hypothesis vs measured", "Provenance"]
    assert "WARNING" not in markdown and "0.850 ± 0.635" in markdown


def test_single_cell_grid_and_reference_cpu_cell_are_reported(tmp_path):
    cell = metrics_json("mamba2", 128, 64, 0, 0.04, backend="reference", device="cpu")
    cell["slices"][0]["by_distance"] = []  # a breakdown with no buckets leaves one panel
    write_cell(tmp_path / "cells", cell)
    metrics = write_report(tmp_path / "cells", tmp_path / "out", 0.9)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert metrics["cells"] == 1 and metrics["capacity.mamba2.ds64"] == 0
    assert "0.040 (n=1)" in markdown and "4.0% (n=1)" in markdown
    assert "WARNING: 1 of 1 cells ran on the pure-PyTorch reference" in markdown
    assert "By key position in the context:" in markdown and "By key→query distance" not in markdown
    assert all((tmp_path / "out" / "figures" / f"{n}.png").stat().st_size > 0
               for n in ("cliff", "heatmap", "capacity", "where_recall_fails"))


def test_malformed_json_names_the_file(cells_dir):
    broken = cells_dir / "broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text('{"cell": "x", ')
    with pytest.raises(ConfigError, match=re.escape(str(broken))):
        load_grid(cells_dir)


def test_missing_field_and_duplicate_cell_are_config_errors(cells_dir, tmp_path):
    bad = metrics_json("mamba2", 16, 16, 0, 0.7)
    del bad["model"]["d_state"]
    write_cell(tmp_path / "other", bad)
    with pytest.raises(ConfigError, match="model.d_state"):
        load_grid(tmp_path / "other")
    copy = cells_dir / "copy" / "metrics.json"
    copy.parent.mkdir()
    copy.write_text(json.dumps(metrics_json("mamba2", 16, 16, 0, 0.7)))
    with pytest.raises(ConfigError, match="2 metrics files for one cell"):
        load_grid(cells_dir)


@pytest.mark.parametrize("extra", [[], ["--capacity-threshold", "1.5"], ["--capacity_threshold", "0"]])
def test_cli_exits_2_with_one_line(tmp_path, cells_dir, extra):
    empty = tmp_path / "empty"
    empty.mkdir()
    cells, log = (cells_dir if extra else empty), tmp_path / "logs" / "report.log"
    result = subprocess.run([sys.executable, "-m", "align_mamba.report", "--cells", str(cells),
                             "--out", str(tmp_path / "out"), "--log", str(log), *extra],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ("no metrics files" if not extra else "capacity-threshold must be in (0, 1]") in lines[0]
    assert lines[0] in log.read_text()
    assert not (tmp_path / "out").exists()
