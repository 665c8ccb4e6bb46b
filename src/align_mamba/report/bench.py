"""The benchmark's report pieces: figures and tables from OUT/mixers.csv, train_step.csv, summary.json.

Pure functions of the loaded frames: throughput and memory against sequence length (log-log, one
panel per mode, one line per mixer/architecture and d_state, the attention/Mamba-2 crossover marked),
the training-step ladder and the provenance of every row. render.py turns them into sections.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from align_mamba.bench.summary import crossovers
from align_mamba.errors import DataIntegrityError
from align_mamba.report.figures import _log2_axis, _panels, architecture_styles

MODE_TITLES = {"forward": "forward (prefill)", "train": "forward + backward", "decode": "decode step"}
MEMORY = {"forward": ("peak_mib", "peak MiB above inputs"), "train": ("peak_mib", "peak MiB above inputs"),
          "decode": ("state_mib", "cache / state MiB")}


@dataclass(frozen=True)
class BenchResults:
    mixers: pd.DataFrame
    ladder: pd.DataFrame
    summary: dict


def load_bench(directory: Path) -> BenchResults:
    """The three files of one `python -m align_mamba.bench --out DIR` run."""
    paths = [Path(directory) / name for name in ("mixers.csv", "train_step.csv", "summary.json")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataIntegrityError(f"benchmark output missing: {', '.join(missing)}")
    # empty numbers are NaN (d_state: none, for attention), empty text stays ""
    mixers = pd.read_csv(paths[0], keep_default_na=False, na_values=[""], dtype={"d_state": "Int64"},
                         converters={"reason": str, "backend": str})
    return BenchResults(mixers, pd.read_csv(paths[1]), json.loads(paths[2].read_text()))


def with_series(mixers: pd.DataFrame) -> pd.DataFrame:
    """The rows plus a `series` label: the name, "(model)" for architectures, and N=d_state where
    the name was run at several d_state values."""
    frame = mixers.copy()
    states = frame.groupby(["kind", "name"])["d_state"].transform("nunique")

    def label(row, several) -> str:
        text = row["name"] + (" (model)" if row["kind"] == "architecture" else "")
        return f"{text}, N={row['d_state']}" if several > 1 else text

    frame["series"] = [label(row, n) for (_, row), n in zip(frame.iterrows(), states)]
    return frame


def _line_style(kind: str) -> dict:
    return {"linestyle": "--"} if kind == "raw" else {"linestyle": ":"} if kind == "architecture" else {}


def _mark_crossovers(ax, mixers: pd.DataFrame, mode: str) -> None:
    """A vertical line (gid "crossover") at each interpolated attention/Mamba-2 crossover."""
    for d_state, found in crossovers(mixers).get(mode, {}).items():
        if found["length"] is None:
            continue
        ax.axvline(found["length"], color="black", linestyle="-.", linewidth=1, gid="crossover")
        ax.annotate(f"crossover ≈ {found['length']:,.0f} (N={d_state})", (found["length"], 0.97),
                    xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize="x-small")


def _curves(mixers: pd.DataFrame, column: str, ylabels: dict[str, str], crossover: bool) -> Figure:
    ok = with_series(mixers[mixers["status"] == "ok"])
    modes = [m for m in MODE_TITLES if m in set(mixers["mode"])]
    styles = architecture_styles(ok["series"])
    fig, axes = _panels(len(modes))
    for ax, mode in zip(axes, modes):
        panel = ok[(ok["mode"] == mode) & ok[column].notna()]
        for series, line in panel.groupby("series"):
            line = line.sort_values("seq_len")
            ax.plot(line["seq_len"], line[column], label=series, **styles[series], **_line_style(line["kind"].iloc[0]))
        if panel.empty:  # e.g. peak memory of a CPU run, which records none
            ax.text(0.5, 0.5, f"no {ylabels[mode]} recorded", ha="center", va="center", transform=ax.transAxes)
        else:
            _log2_axis(ax, panel["seq_len"])
            ax.set_yscale("log")
            ax.legend(fontsize="x-small", loc="best")
        if crossover:
            _mark_crossovers(ax, mixers, mode)
        xlabel = "context length Lc" if mode == "decode" else "sequence length L"
        ax.set(title=MODE_TITLES[mode], xlabel=f"{xlabel} (log)", ylabel=ylabels[mode])
        ax.grid(alpha=0.3, which="both")
    return fig


def throughput_figure(mixers: pd.DataFrame) -> Figure:
    """Tokens/s against L (log-log): a panel per mode, a line per series (dashed: raw mamba-ssm /
    SDPA, dotted: whole models), the attention/Mamba-2 crossover as a vertical line."""
    return _curves(mixers, "tokens_per_s", dict.fromkeys(MODE_TITLES, "tokens / s"), crossover=True)


def memory_figure(mixers: pd.DataFrame) -> Figure:
    """Memory against L (log-log): peak MiB above the inputs for forward/train (GPU runs only),
    the size of the KV cache or recurrent state for decode."""
    frame = mixers.copy()
    frame["memory_mib"] = [row[MEMORY[row["mode"]][0]] for _, row in frame.iterrows()]
    return _curves(frame, "memory_mib", {mode: label for mode, (_, label) in MEMORY.items()}, crossover=False)


def _number(value: float, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def ladder_table(ladder: pd.DataFrame) -> pd.DataFrame:
    """The training-step ladder, formatted: one row per rung."""
    return pd.DataFrame({
        "rung": ladder["rung"],
        "change": ladder["description"],
        "ms / step": [_number(v) for v in ladder["ms_per_step"]],
        "M tokens / s": [_number(v / 1e6, 3) for v in ladder["tokens_per_s"]],
        "× naive": [_number(v) for v in ladder["speedup_vs_naive"]],
        "ran": [f"{s}: {r}" if isinstance(r, str) and r else s for s, r in zip(ladder["status"], ladder["reason"])],
    })


def environment_table(summary: dict) -> pd.DataFrame:
    """Device, dtype and the versions of torch, triton, mamba-ssm and causal-conv1d."""
    items = {"device": summary["device"], "dtype": summary["dtype"],
             **{name: version or "not installed" for name, version in summary["versions"].items()}}
    return pd.DataFrame({"": list(items), "value": list(items.values())})


def provenance_table(mixers: pd.DataFrame) -> pd.DataFrame:
    """Which backend, path and dtype produced the rows of each case, and their statuses."""
    keys = ["kind", "name", "backend", "fused", "dtype"]
    frame = mixers.fillna({"backend": ""})
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        counts = group["status"].value_counts()
        rows.append({**dict(zip(keys, key)), "rows": len(group),
                     "status": ", ".join(f"{status} {counts[status]}" for status in sorted(counts.index))})
    return pd.DataFrame(rows, columns=[*keys, "rows", "status"])
