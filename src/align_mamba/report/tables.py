"""The report's numbers in pandas: per-cell metrics files loaded into frames, mean ± 95% CI over
seeds, capacity per (architecture, d_state), recall by key position and distance, hypotheses
beside measurements, and which backend and device produced each cell.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from align_mamba.core.errors import ConfigError

# Two-sided 95% Student t quantiles t(0.975, df) for df = 1..30; beyond 30 the normal 1.96 is
# within 4% of t. Hardcoded so the report needs no scipy.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
GRID = ["architecture", "num_pairs", "d_state"]
KEY = [*GRID, "seed"]
PROVENANCE = ["train_backend", "train_device", "eval_backend", "eval_device"]
BREAKDOWNS = {"by_key_decile": "key position in the context", "by_distance": "key→query distance (tokens)"}
# A mean of 0.85 and 0.95 is 0.8999999999999999 in floating point; it reaches a 0.9 threshold.
THRESHOLD_SLACK = 1e-9


@dataclass(frozen=True)
class Hypothesis:
    """What one architecture was expected to reach on one grid point (text, e.g. "~95%")."""

    hybrid_positions: tuple[int, ...]
    num_pairs: int
    d_state: int
    expected: str


# Hypotheses from the project brief, NOT results: what the study expected at num_pairs 128 and
# d_state 64. `()` is the decoder-only Mamba-2; the report prints these beside what was measured.
HYPOTHESES = (
    Hypothesis((), 128, 64, "~0%"),
    Hypothesis((0,), 128, 64, "~85–90%"),
    Hypothesis((0, 2), 128, 64, "~95%"),
    Hypothesis((8, 16), 128, 64, "~0%"),
)


@dataclass(frozen=True)
class Grid:
    """Everything loaded: `cells` has one row per metrics file, `buckets` one row per (cell,
    breakdown, bucket) of the cell's own test slice (slices[0])."""

    cells: pd.DataFrame
    buckets: pd.DataFrame


def positions_text(positions) -> str:
    """`[0, 2]`: how the brief writes hybrid positions; also the matching key in frames."""
    return "[" + ", ".join(str(int(p)) for p in positions) + "]"


def _field(metrics: dict, dotted: str, path: Path, cast=None) -> Any:
    """metrics["a"]["b"][0]... for "a.b.0", cast; a missing or mistyped value names file and field."""
    node: Any = metrics
    try:
        for part in dotted.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return cast(node) if cast else node
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: missing or invalid '{dotted}' ({type(err).__name__}: {err})") from None


def _read_json(path: Path) -> Any:
    """The parsed file; malformed JSON is a ConfigError naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"malformed JSON in {path}: {err}") from None


def _model_key(model: dict) -> str:
    """The model's settings without its name and d_state: equal keys mean the same architecture
    (entries that differ only in training settings, such as their own lr)."""
    return json.dumps({k: v for k, v in model.items() if k not in ("name", "d_state")}, sort_keys=True)


def _cell_row(path: Path, metrics: dict, root: Path) -> dict:
    """One flat row of cells.csv from one metrics file."""
    def get(dotted: str, cast=None):
        return _field(metrics, dotted, path, cast)

    row = {
        "cell": get("cell", str), "architecture": get("architecture", str), "variant": get("model.variant", str),
        "hybrid_positions": positions_text(get("model.hybrid_positions")),
        "num_pairs": get("num_pairs", int), "d_state": get("model.d_state", int), "seed": get("seed", int),
        "accuracy": get("accuracy", float), "exact_match": get("exact_match", float),
        # metrics files from before the training-split check have none: NaN, shown as "—"
        "train_accuracy": get("train_accuracy", float) if "train_accuracy" in metrics else float("nan"),
        "state_ssm": get("state_size_floats.ssm", int), "state_attention": get("state_size_floats.attention", int),
        "state_total": get("state_size_floats.total", int), "parameters": get("parameters", int),
        "train_backend": get("train.backend", str), "train_device": get("train.device", str),
        "eval_backend": get("backend", str), "eval_device": get("device", str),
        "best_step": get("train.best_step", int), "best_val_accuracy": get("train.best_val_accuracy", float),
        # metrics files from before the learning rate was recorded have none: NaN, shown as "—"
        "lr": get("train.lr", float) if get("train", dict).get("lr") is not None else math.nan,
        "model_key": _model_key(get("model", dict)),
        "wall_seconds": get("wall_seconds", float), "path": path.relative_to(root).as_posix(),
    }
    if get("slices.0.num_pairs", int) != row["num_pairs"]:
        raise ConfigError(f"{path}: slices[0] must be the cell's own num_pairs ({row['num_pairs']})")
    for name in ("accuracy", "exact_match", "train_accuracy"):
        if not (0.0 <= row[name] <= 1.0 or (name == "train_accuracy" and pd.isna(row[name]))):
            raise ConfigError(f"{path}: {name} must be in [0, 1], got {row[name]}")
    return row


def _bucket_rows(path: Path, metrics: dict, cell: dict) -> list[dict]:
    """Long rows of slices[0]'s breakdowns; `order` is the bucket's lower bound, for sorting."""
    rows = []
    for breakdown in BREAKDOWNS:
        for i in range(len(_field(metrics, f"slices.0.{breakdown}", path, list))):
            label = _field(metrics, f"slices.0.{breakdown}.{i}.bucket", path, str)
            lower = re.match(r"\d+", label)
            if lower is None:
                raise ConfigError(f"{path}: {breakdown} bucket {label!r} does not start with a number")
            rows.append({**{k: cell[k] for k in KEY}, "breakdown": breakdown, "bucket": label,
                         "order": int(lower.group()),
                         "accuracy": _field(metrics, f"slices.0.{breakdown}.{i}.accuracy", path, float),
                         "count": _field(metrics, f"slices.0.{breakdown}.{i}.count", path, int)})
    return rows


def _reject_duplicates(cells: pd.DataFrame) -> None:
    """Two files for one (architecture, num_pairs, d_state, seed) would count a seed twice."""
    duplicated = cells[cells.duplicated(KEY, keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        same = duplicated[(duplicated[KEY] == first[KEY]).all(axis=1)]["path"]
        raise ConfigError(f"{len(same)} metrics files for one cell ({first['cell']}): {', '.join(same)}")


def load_grid(directory: Path, expected: list[Path] | None = None) -> Grid:
    """The metrics files under `directory`: exactly `expected` when given, else all, recursively.

    A metrics file is a JSON object with `cell` and `slices` (what `python -m align_mamba.recall.evaluate`
    writes); other JSON files (train.json, data manifests) are skipped, so --cells may be a runs
    folder. `expected` (the current grid's cells) keeps files of cells dropped from the grid out of
    the report. Raises ConfigError when none is found, or naming the file that is missing or malformed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"--cells directory not found: {directory}")
    missing = [str(path) for path in expected or [] if not path.is_file()]
    if missing:
        raise ConfigError(f"{len(missing)} metrics file(s) of the grid are missing, e.g. {missing[0]}")
    rows, buckets = [], []
    for path in sorted(expected if expected is not None else directory.rglob("*.json")):
        metrics = _read_json(path)
        if isinstance(metrics, dict) and {"cell", "slices"} <= metrics.keys():
            rows.append(_cell_row(path, metrics, directory))
            buckets.extend(_bucket_rows(path, metrics, rows[-1]))
    if not rows:
        raise ConfigError(f"no metrics files under {directory} (JSON with 'cell' and 'slices', "
                          f"as written by python -m align_mamba.recall.evaluate)")
    cells = pd.DataFrame(rows).sort_values(KEY, ignore_index=True)
    _reject_duplicates(cells)
    return Grid(cells, pd.DataFrame(buckets, columns=[*KEY, "breakdown", "bucket", "order", "accuracy", "count"]))


def mean_ci(values) -> tuple[float, float, int]:
    """Mean, half-width of its 95% Student t-interval (NaN when n < 2: no spread to measure), n."""
    series = pd.Series(values, dtype=float).dropna()
    n, mean = len(series), float(series.mean())
    if n < 2:
        return mean, math.nan, n
    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    return mean, t * float(series.std(ddof=1)) / math.sqrt(n), n


def format_mean_ci(mean: float, half: float, n: int, percent: bool = False) -> str:
    """`0.850 ± 0.064`, or `0.850 (n=1)` when one seed gives no interval; `percent` gives `85.0%`."""
    n = int(n)
    if percent:
        text = f"{100 * mean:.1f}%"
        return f"{text} (n={n})" if n < 2 else f"{text} ± {100 * half:.1f}%"
    return f"{mean:.3f} (n={n})" if n < 2 else f"{mean:.3f} ± {half:.3f}"


def summarize(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (architecture, num_pairs, d_state): accuracy and exact match, mean ± CI over seeds."""
    rows = []
    for key, group in cells.groupby(GRID, sort=True):
        acc, em = mean_ci(group["accuracy"]), mean_ci(group["exact_match"])
        first = group.iloc[0]  # the config and so the state size are the same for every seed
        rows.append({**dict(zip(GRID, key)), "acc_mean": acc[0], "acc_ci": acc[1], "em_mean": em[0],
                     "em_ci": em[1], "n": acc[2], "train_acc_mean": group["train_accuracy"].mean(),
                     "variant": first["variant"],
                     "hybrid_positions": first["hybrid_positions"], "state_total": int(first["state_total"])})
    return pd.DataFrame(rows)


def cells_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The "every cell" table, formatted."""
    return pd.DataFrame({
        "architecture": summary["architecture"], "num_pairs": summary["num_pairs"], "d_state": summary["d_state"],
        "accuracy (mean ± 95% CI)": [format_mean_ci(*r) for r in summary[["acc_mean", "acc_ci", "n"]].values],
        "exact match (mean ± 95% CI)": [format_mean_ci(*r) for r in summary[["em_mean", "em_ci", "n"]].values],
        "train accuracy (mean)": ["—" if pd.isna(v) else f"{v:.3f}" for v in summary["train_acc_mean"]],
        "seeds (n)": summary["n"], "state size (floats)": summary["state_total"],
    })


def capacity_table(summary: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per (architecture, d_state): the largest num_pairs whose mean accuracy ≥ threshold.

    `capacity` is 0 and `label` "none" when no grid point reaches it; `censored` (label "≥ N")
    when the largest num_pairs tested still passes, so the true capacity may be higher.
    `state_at_capacity` is the state size in floats at that num_pairs (attention's grows with it).
    """
    rows = []
    for (arch, d_state), group in summary.groupby(["architecture", "d_state"], sort=True):
        passing = group[group["acc_mean"] >= threshold - THRESHOLD_SLACK]
        largest = int(group["num_pairs"].max())
        cap = int(passing["num_pairs"].max()) if len(passing) else 0
        state = int(passing.loc[passing["num_pairs"].idxmax(), "state_total"]) if cap else 0
        label = "none" if not cap else (f"≥ {cap}" if cap == largest else str(cap))
        rows.append({"architecture": arch, "d_state": int(d_state), "capacity": cap, "label": label,
                     "censored": cap == largest, "state_at_capacity": state, "largest_tested": largest})
    return pd.DataFrame(rows)


def capacity_display(capacity: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The capacity table, formatted ("none", "≥ N", N; "—" for no state at capacity)."""
    return pd.DataFrame({
        "architecture": capacity["architecture"], "d_state": capacity["d_state"],
        f"capacity (largest num_pairs with accuracy ≥ {threshold:g})": capacity["label"],
        "state size at capacity (floats)": [s if s else "—" for s in capacity["state_at_capacity"]],
        "largest num_pairs tested": capacity["largest_tested"],
    })


def breakdown(grid: Grid, name: str) -> pd.DataFrame:
    """Recall by bucket of breakdown `name` (see BREAKDOWNS), mean over seeds, per architecture at
    its largest num_pairs and, there, its largest d_state (the most state it was given).

    Columns: series (e.g. `mamba2 (np128, ds64)`), architecture, bucket, order, accuracy, count, seeds.
    """
    cells = grid.cells
    largest_np = cells.groupby("architecture")["num_pairs"].transform("max")
    at_np = cells[cells["num_pairs"] == largest_np]
    chosen = at_np[at_np["d_state"] == at_np.groupby("architecture")["d_state"].transform("max")]
    rows = grid.buckets[grid.buckets["breakdown"] == name].merge(chosen[KEY], on=KEY)
    out = (rows.groupby([*GRID, "bucket", "order"], as_index=False)
           .agg(accuracy=("accuracy", "mean"), count=("count", "sum"), seeds=("seed", "nunique")))
    out["series"] = [f"{a} (np{p}, ds{d})" for a, p, d in out[GRID].values]
    return out.sort_values(["architecture", "order"], ignore_index=True)


def breakdown_display(long: pd.DataFrame) -> pd.DataFrame:
    """Bucket × series table of accuracies; "—" where a series has no query in that bucket."""
    text = long.assign(text=[f"{v:.3f}" for v in long["accuracy"]])
    wide = text.pivot(index=["order", "bucket"], columns="series", values="text").sort_index().fillna("—")
    return wide.reset_index(level="order", drop=True).reset_index().rename_axis(columns=None)


def hypothesis_table(summary: pd.DataFrame, hypotheses=HYPOTHESES) -> pd.DataFrame:
    """Each hypothesis beside the measured mean ± CI of every matching architecture, or "not run".

    `[]` matches the decoder-only mamba2 (mamba1 and the transformer are other hypotheses'
    baselines); other positions match hybrids with exactly those cross-attention layers.
    """
    rows = []
    for h in hypotheses:
        variant = "hybrid" if h.hybrid_positions else "mamba2"
        match = summary[(summary["variant"] == variant) & (summary["num_pairs"] == h.num_pairs)
                        & (summary["d_state"] == h.d_state)
                        & (summary["hybrid_positions"] == positions_text(h.hybrid_positions))]
        base = {"hybrid_positions": positions_text(h.hybrid_positions), "num_pairs": h.num_pairs,
                "d_state": h.d_state, "hypothesis (expected)": h.expected}
        if match.empty:
            rows.append({**base, "architecture": "—", "measured (mean ± 95% CI)": "not run"})
        for _, m in match.iterrows():
            rows.append({**base, "architecture": m["architecture"],
                         "measured (mean ± 95% CI)": format_mean_ci(m["acc_mean"], m["acc_ci"], m["n"], True)})
    return pd.DataFrame(rows)


def provenance_table(cells: pd.DataFrame) -> pd.DataFrame:
    """How many cells each (train backend/device, eval backend/device) combination produced."""
    return (cells.groupby(PROVENANCE, as_index=False)
            .agg(cells=("cell", "size"), architectures=("architecture", lambda a: ", ".join(sorted(set(a))))))


def off_kernel_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells trained or evaluated on the pure-PyTorch reference backend or on CPU."""
    reference = (cells[["train_backend", "eval_backend"]] == "reference").any(axis=1)
    cpu = cells[["train_device", "eval_device"]].apply(lambda col: col.str.startswith("cpu")).any(axis=1)
    return cells[reference | cpu]


def headline_metrics(cells: pd.DataFrame, capacity: pd.DataFrame) -> dict[str, float | int]:
    """Flat numbers for `dvc exp show`: capacity.<arch>.ds<d> (0 = none), accuracy.<arch>, means."""
    metrics: dict[str, float | int] = {"cells": len(cells), "mean_accuracy": float(cells["accuracy"].mean()),
                                       "mean_exact_match": float(cells["exact_match"].mean())}
    for arch, acc in cells.groupby("architecture")["accuracy"].mean().items():
        metrics[f"accuracy.{arch}"] = float(acc)
    for arch, d_state, cap in capacity[["architecture", "d_state", "capacity"]].values:
        metrics[f"capacity.{arch}.ds{d_state}"] = int(cap)
    return dict(sorted(metrics.items()))
