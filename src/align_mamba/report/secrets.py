"""The secret-span task's report pieces, from `python -m align_mamba.secrets.evaluate` (DIR/<tagger>/)
and `python -m align_mamba.secrets.baselines` (DIR/baselines/) outputs.

Loaded into three frames (one row per system × split; one row per system × split × breakdown value;
one row per system × split × format of boundary accuracy), then: the headline table, per-format
recall with Wilson 95% intervals, recall per hard case (secrets written split, encoded, escaped or
minified), per-format boundary accuracy (the IoU distribution of each true
span's best prediction), recall by target decile and by file length (figures), the best tagger
beside CredSweeper, and flat metrics for `dvc exp show`.
Pure functions of the loaded frames; render.py turns them into a section.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.report.figures import architecture_styles, log2_axis, panels
from align_mamba.secrets.score import BOUNDARY_COLUMNS, BREAKDOWN_COLUMNS, BREAKDOWNS, PLAIN, wilson_interval

SPLITS = {
    "test": "test (in-distribution formats)",
    "test_unseen": "test_unseen (held-out formats)",
    "test_decoys": "test_decoys (decoys only)",
}
SCORED = ("test", "test_unseen")  # the splits with secrets to find
SCALARS = {
    "files": int,
    "bytes": int,
    "n_true": int,
    "n_pred": int,
    "span_tp": int,
    "span_precision": float,
    "span_recall": float,
    "span_f1": float,
    "hit_rate": float,
    "byte_f1": float,
    "wall_seconds": float,
}
BASELINES = "baselines"
CREDSWEEPER = "credsweeper"
# (metric key's split, field) of the flat metrics, per system
METRICS = (("test", "span_f1"), ("test_unseen", "span_recall"), ("test_decoys", "false_alarms_per_mb"))
FIGURES = {
    "by_decile": ("recall_by_position", "target decile of the secrets (0: the file's first 10%)"),
    "by_length": ("recall_by_length", "file length bucket (bytes, log2)"),
}


# scores.json files written before the hard cases existed have no by_case
OPTIONAL_BREAKDOWNS = {"by_case"}


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


@dataclass(frozen=True)
class SecretResults:
    """runs: one row per (system, split): kind (tagger / baseline), ran_on, SCALARS and
    false_alarms_per_mb; breakdowns: one row per (system, split, breakdown, value) with
    BREAKDOWN_COLUMNS; boundary: one row per (system, split, format) with BOUNDARY_COLUMNS;
    notes: one line per missing input, saying how to produce it."""

    runs: pd.DataFrame
    breakdowns: pd.DataFrame
    boundary: pd.DataFrame
    notes: tuple[str, ...]


@dataclass
class _Loaded:
    """Rows gathered from scores.json files; `stale`: systems with a scores.json without boundary rows."""

    runs: list[dict]
    rows: list[dict]
    boundary: list[dict]
    notes: list[str]
    stale: list[str]


def _boundary_rows(scores: dict, path: Path, system: str, kind: str, split: str) -> list[dict] | None:
    """The boundary records of one scores.json as rows; None when it has none (written before they existed)."""
    if "boundary" not in scores:
        return None
    records = _field(scores, "boundary", path, list)
    return [
        {
            "system": system,
            "kind": kind,
            "split": split,
            "format": _field(scores, f"boundary.{i}.format", path, str),
            **{c: _field(scores, f"boundary.{i}.{c}", path) for c in BOUNDARY_COLUMNS},
        }
        for i in range(len(records))
    ]


def _scores(path: Path, system: str, kind: str, split: str, ran_on: str, into: _Loaded) -> None:
    """One scores.json as a run row, its breakdown rows and its boundary rows, added to `into`."""
    if not path.is_file():
        raise DataIntegrityError(f"{path} is missing (listed as run by its summary)")
    scores = _read_json(path)
    alarms = _field(scores, "false_alarms_per_mb", path)  # null when the split has no bytes
    run = {
        "system": system,
        "kind": kind,
        "split": split,
        "ran_on": ran_on,
        **{name: _field(scores, name, path, cast) for name, cast in SCALARS.items()},
        "false_alarms_per_mb": math.nan if alarms is None else float(alarms),
    }
    rows = []
    for breakdown, key in BREAKDOWNS.items():
        if breakdown in OPTIONAL_BREAKDOWNS and breakdown not in scores:
            continue
        for i in range(len(_field(scores, breakdown, path, list))):
            record = {c: _field(scores, f"{breakdown}.{i}.{c}", path) for c in BREAKDOWN_COLUMNS}
            rows.append(
                {
                    "system": system,
                    "kind": kind,
                    "split": split,
                    "breakdown": breakdown,
                    "value": _field(scores, f"{breakdown}.{i}.{key}", path),
                    **record,
                }
            )
    into.runs.append(run)
    into.rows += rows
    bounds = _boundary_rows(scores, path, system, kind, split)
    if bounds is None:
        into.stale.append(system)
    else:
        into.boundary += bounds


def _taggers(directory: Path, expected: list[str] | None, into: _Loaded) -> None:
    """Every tagger folder with a summary.json (only `expected` names, if given)."""
    found = sorted(p.parent.name for p in directory.glob("*/summary.json") if p.parent.name != BASELINES)
    names = found if expected is None else list(expected)
    for name in names:
        summary_path = directory / name / "summary.json"
        if not summary_path.is_file():
            into.notes.append(
                f"No results for tagger {name} ({summary_path}): run `python -m align_mamba.secrets.evaluate "
                f"--data DATA --checkpoint RUN/model.pt --out {directory / name}`."
            )
            continue
        summary = _read_json(summary_path)
        ran_on = f"{_field(summary, 'backend', summary_path)} on {_field(summary, 'device', summary_path)}"
        for split in _field(summary, "splits", summary_path, dict):
            _scores(directory / name / split / "scores.json", name, "tagger", split, ran_on, into)
    if not names:
        into.notes.append(
            f"No tagger results in {directory} (<tagger>/summary.json): run `python -m "
            f"align_mamba.secrets.evaluate --data DATA --checkpoint RUN/model.pt --out {directory}/<tagger>`."
        )


def _baselines(directory: Path, into: _Loaded) -> None:
    """Every (tool, split) listed in DIR/baselines/summary.csv."""
    summary_path = directory / BASELINES / "summary.csv"
    if not summary_path.is_file():
        into.notes.append(
            f"No baseline results ({summary_path}): run `python -m align_mamba.secrets.baselines "
            f"--data DATA --out {directory / BASELINES}`."
        )
        return
    listed = pd.read_csv(summary_path, dtype=str, keep_default_na=False)
    absent = [c for c in ("tool", "split", "version") if c not in listed.columns]
    if absent:
        raise DataIntegrityError(f"{summary_path}: missing column(s) {', '.join(absent)}")
    for tool, split, version in listed[["tool", "split", "version"]].values:
        path = directory / BASELINES / tool / split / "scores.json"
        _scores(path, tool, "baseline", split, f"{tool} {version} on cpu", into)


def load_secrets(directory: Path, taggers: list[str] | None = None) -> SecretResults:
    """The scores under `directory`; `taggers` (e.g. params.yaml's names) limits which folders count.

    Missing inputs become notes; a malformed or incomplete file raises, naming it.
    """
    directory = Path(directory)
    loaded = _Loaded([], [], [], [], [])
    _taggers(directory, taggers, loaded)
    _baselines(directory, loaded)
    kinds = {}
    for run in loaded.runs:
        kinds.setdefault(run["system"], set()).add(run["kind"])
    clash = sorted(system for system, seen in kinds.items() if len(seen) > 1)
    if clash:
        raise DataIntegrityError(f"{directory}: a tagger folder has a baseline tool's name: {', '.join(clash)}")
    if loaded.stale:
        loaded.notes.append(
            f"No boundary accuracy for {', '.join(dict.fromkeys(loaded.stale))}: their scores.json files "
            f"predate it; re-run `python -m align_mamba.secrets.evaluate` (taggers) or "
            f"`python -m align_mamba.secrets.baselines` to add it."
        )
    runs = pd.DataFrame(loaded.runs, columns=["system", "kind", "split", "ran_on", *SCALARS, "false_alarms_per_mb"])
    breakdowns = pd.DataFrame(
        loaded.rows, columns=["system", "kind", "split", "breakdown", "value", *BREAKDOWN_COLUMNS]
    )
    boundary = pd.DataFrame(loaded.boundary, columns=["system", "kind", "split", "format", *BOUNDARY_COLUMNS])
    return SecretResults(runs, breakdowns, boundary, tuple(loaded.notes))


def systems(runs: pd.DataFrame) -> list[str]:
    """Taggers (sorted) then baselines (in their summary's order): the order of rows and legends."""
    order = runs.drop_duplicates("system")
    return sorted(order[order["kind"] == "tagger"]["system"]) + order[order["kind"] == "baseline"]["system"].tolist()


def mismatched_splits(runs: pd.DataFrame) -> list[str]:
    """Splits whose systems were scored on different files (files, bytes or secrets differ)."""
    counts = runs.groupby("split")[["files", "bytes", "n_true"]].nunique()
    return counts[(counts > 1).any(axis=1)].index.tolist()


def _number(value: float, digits: int = 3) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def headline_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per system: span P / R / F1, hit rate and byte F1 per scored split, false alarms
    per MB on test_decoys, and MB/s over all its splits (bytes ÷ scan seconds)."""
    rows = []
    for system in systems(runs):
        mine = runs[runs["system"] == system].set_index("split")
        row = {"system": system, "kind": mine["kind"].iloc[0]}
        for split in SCORED:
            have = split in mine.index
            r = mine.loc[split] if have else None
            row[f"{split}: span P / R / F1"] = (
                " / ".join(_number(r[k]) for k in ("span_precision", "span_recall", "span_f1")) if have else "—"
            )
            row[f"{split}: hit rate"] = _number(r["hit_rate"]) if have else "—"
            row[f"{split}: byte F1"] = _number(r["byte_f1"]) if have else "—"
        decoys = mine.loc["test_decoys", "false_alarms_per_mb"] if "test_decoys" in mine.index else math.nan
        row["test_decoys: false alarms / MB"] = _number(decoys, 1)
        seconds = mine["wall_seconds"].sum()
        row["MB/s"] = _number(mine["bytes"].sum() / 1e6 / seconds, 4) if seconds > 0 else "—"
        row["ran on"] = mine["ran_on"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def _interval(recall: float, low: float, high: float) -> str:
    return f"{recall:.2f} [{low:.2f}, {high:.2f}]"


def _recall_rows(breakdowns: pd.DataFrame, breakdown: str, column: str, value_order) -> pd.DataFrame:
    """Span recall [Wilson 95%] of one breakdown on test and test_unseen: a row per (split, value)
    named `column`, with the secrets counted and a column per system ("—" for a system without the
    value); rows by split, then by `value_order` of the value."""
    frame = breakdowns[(breakdowns["breakdown"] == breakdown) & breakdowns["split"].isin(SCORED)]
    names = systems(frame)
    rows = []
    for (split, value), group in frame.groupby(["split", "value"], sort=False):
        by_system = group.set_index("system")
        recall = {
            name: _interval(*by_system.loc[name, ["recall", "wilson_low", "wilson_high"]])
            if name in by_system.index
            else "—"
            for name in names
        }
        rows.append({"split": split, column: value, "secrets": int(group["true"].max()), **recall})
    table = pd.DataFrame(rows, columns=["split", column, "secrets", *names])
    order = {split: i for i, split in enumerate(SCORED)}
    return table.sort_values(
        ["split", column],
        key=lambda c: c.map(order) if c.name == "split" else c.map(value_order),
        ignore_index=True,
    )


def per_format_table(breakdowns: pd.DataFrame) -> pd.DataFrame:
    """Span recall [Wilson 95%] per format (rows) and system (columns), on test and test_unseen;
    `held out` marks the formats of test_unseen (never in training)."""
    table = _recall_rows(breakdowns, "per_format", "format", lambda fmt: fmt)
    heldout = set(table[table["split"] == "test_unseen"]["format"])
    table.insert(2, "held out", ["yes" if fmt in heldout else "" for fmt in table["format"]])
    return table


def per_case_table(breakdowns: pd.DataFrame) -> pd.DataFrame:
    """Span recall [Wilson 95%] per hard case (rows: `plain` first, then base64, concat, ...) and
    system (columns), on test and test_unseen; empty when no scores.json has the by_case breakdown."""
    return _recall_rows(breakdowns, "by_case", "written as", lambda case: (case != PLAIN, case))


def _quartiles(row) -> str:
    return f"{row['iou_median']:.2f} [{row['iou_q25']:.2f}, {row['iou_q75']:.2f}]"


def _errors(row) -> str:
    if row["located"] == 0:
        return "—"
    return f"{_number(row['mean_start_error'], 1)} / {_number(row['mean_end_error'], 1)}"


def boundary_accuracy_table(boundary: pd.DataFrame) -> pd.DataFrame:
    """Per format and system, on test and test_unseen: how closely the best prediction bounds each
    true span. IoU median [quartiles] over the format's spans (0 for a missed one), the shares with
    IoU >= 0.5 and >= 0.9, and the mean absolute start / end errors in bytes of the overlapped ones."""
    frame = boundary[boundary["split"].isin(SCORED)]
    heldout = set(frame[frame["split"] == "test_unseen"]["format"])
    rank = {name: i for i, name in enumerate(systems(frame))}
    order = {split: i for i, split in enumerate(SCORED)}
    frame = frame.sort_values(
        ["split", "format", "system"],
        key=lambda c: c.map(order) if c.name == "split" else c.map(rank) if c.name == "system" else c,
    )
    return pd.DataFrame(
        {
            "split": frame["split"],
            "format": frame["format"],
            "held out": ["yes" if fmt in heldout else "" for fmt in frame["format"]],
            "system": frame["system"],
            "secrets": frame["true"].astype(int),
            "overlapped": frame["located"].astype(int),
            "IoU median [q25, q75]": [_quartiles(row) for _, row in frame.iterrows()],
            "IoU ≥ 0.5": [f"{v:.2f}" for v in frame["iou_ge_50"]],
            "IoU ≥ 0.9": [f"{v:.2f}" for v in frame["iou_ge_90"]],
            "start / end error (bytes)": [_errors(row) for _, row in frame.iterrows()],
        },
    ).reset_index(drop=True)


def recall_figure(breakdowns: pd.DataFrame, breakdown: str) -> Figure:
    """Span recall against `breakdown` ("by_decile" or "by_length"): a panel per scored split, one
    error-bar line per system (Wilson 95%; dashed: baselines), systems nudged apart along x."""
    frame = breakdowns[
        (breakdowns["breakdown"] == breakdown) & breakdowns["split"].isin(SCORED) & breakdowns["value"].notna()
    ]
    splits = [s for s in SCORED if s in set(breakdowns["split"])]
    names = systems(breakdowns)
    styles = architecture_styles(names)
    fig, axes = panels(max(len(splits), 1), max_cols=2)
    for ax, split in zip(axes, splits):
        panel = frame[frame["split"] == split]
        for i, name in enumerate(n for n in names if n in set(panel["system"])):
            line = panel[panel["system"] == name].sort_values("value")
            x = line["value"].astype(float)
            nudge = (i - (len(names) - 1) / 2) * 0.08
            x = x * 2**nudge if breakdown == "by_length" else x + nudge
            # Wilson bounds can sit a rounding error inside a recall of 0 or 1: clip, matplotlib rejects < 0
            errors = np.clip([line["recall"] - line["wilson_low"], line["wilson_high"] - line["recall"]], 0, None)
            ax.errorbar(
                x,
                line["recall"],
                yerr=errors,
                capsize=2,
                label=name,
                **styles[name],
                linestyle="--" if line["kind"].iloc[0] == "baseline" else "-",
            )
        if panel.empty:
            ax.text(0.5, 0.5, "no secrets with this breakdown", ha="center", va="center", transform=ax.transAxes)
        elif breakdown == "by_length":
            log2_axis(ax, panel["value"])
        else:
            ax.set(xticks=range(10), xlim=(-0.5, 9.5))
        ax.set(ylim=(-0.03, 1.03), title=SPLITS[split], xlabel=FIGURES[breakdown][1], ylabel="span recall (IoU ≥ 0.5)")
        ax.grid(alpha=0.3)
        if not panel.empty:
            ax.legend(fontsize="x-small", loc="best")
    return fig


def comparison_sentence(runs: pd.DataFrame) -> str:
    """The best tagger's test span F1 beside CredSweeper's, with both span recalls' Wilson intervals."""
    test = runs[runs["split"] == "test"]
    taggers = test[test["kind"] == "tagger"].sort_values("system")
    sweeper = test[(test["kind"] == "baseline") & (test["system"] == CREDSWEEPER)]
    if taggers.empty or sweeper.empty:
        absent = "no tagger" if taggers.empty else "CredSweeper"
        return f"No comparison with CredSweeper on test: {absent} was not scored on it."
    best, cs = taggers.loc[taggers["span_f1"].idxmax()], sweeper.iloc[0]
    tied = taggers[(taggers["span_f1"] == best["span_f1"]) & (taggers["system"] != best["system"])]["system"]
    name = f"**{best['system']}**" + (f" (tied with {', '.join(tied)})" if len(tied) else "")
    gap = best["span_f1"] - cs["span_f1"]
    relation = "the same as" if round(abs(gap), 3) == 0 else f"{abs(gap):.3f} {'above' if gap > 0 else 'below'}"
    text = (
        f"On test ({int(best['n_true'])} secrets in in-distribution formats, {int(best['files'])} files) the "
        f"best tagger, {name}, reaches span F1 {best['span_f1']:.3f} (P {best['span_precision']:.3f}, "
        f"R {best['span_recall']:.3f}), {relation} CredSweeper's {cs['span_f1']:.3f} "
        f"(P {cs['span_precision']:.3f}, R {cs['span_recall']:.3f})."
    )
    if best["n_true"] == 0:
        return text
    ours, theirs = (wilson_interval(int(r["span_tp"]), int(r["n_true"])) for r in (best, cs))
    overlap = ours[0] <= theirs[1] and theirs[0] <= ours[1]
    verdict = "overlap: this test split does not separate their recall" if overlap else "do not overlap"
    return (
        f"{text} Their span recalls' Wilson 95% intervals, [{ours[0]:.2f}, {ours[1]:.2f}] and "
        f"[{theirs[0]:.2f}, {theirs[1]:.2f}], {verdict}."
    )


def secret_metrics(runs: pd.DataFrame) -> dict[str, float]:
    """secrets.<system>.test.span_f1, .test_unseen.span_recall, .test_decoys.false_alarms_per_mb."""
    metrics = {}
    for _, run in runs.iterrows():
        for split, field in METRICS:
            if run["split"] == split and math.isfinite(run[field]):
                metrics[f"secrets.{run['system']}.{split}.{field}"] = float(run[field])
    return metrics
