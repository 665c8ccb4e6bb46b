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

from align_mamba.bench.summary import WRAPPER_PAIRS, crossovers
from align_mamba.bench.train_step import RUNGS
from align_mamba.core.errors import DataIntegrityError
from align_mamba.report.figures import architecture_styles, log2_axis, panels
from align_mamba.secrets.throughput import COLUMNS as THROUGHPUT_COLUMNS
from align_mamba.secrets.throughput import MB as MIB

MODE_TITLES = {"forward": "forward (prefill)", "train": "forward + backward", "decode": "decode step"}
MEMORY = {
    "forward": ("peak_mib", "peak MiB above inputs"),
    "train": ("peak_mib", "peak MiB above inputs"),
    "decode": ("state_mib", "cache / state MiB"),
}


BENCH_FILES = ("mixers.csv", "train_step.csv", "summary.json")
SCAN_THROUGHPUT = "scan_throughput.csv"  # from python -m align_mamba.secrets.throughput, optional
LEVERS = "levers.json"  # from python -m align_mamba.bench.packing --levers, optional
# How the ladder marks the rung that is align_mamba.recall.train's own step (train_step.RUNGS).
TRAIN_STEP_MARK = "align_mamba.recall.train's step"
assert any(TRAIN_STEP_MARK in r.description for r in RUNGS)


@dataclass(frozen=True)
class BenchResults:
    mixers: pd.DataFrame
    ladder: pd.DataFrame
    summary: dict
    scan_throughput: pd.DataFrame | None = None  # None: DIR/scan_throughput.csv absent
    levers: dict | None = None  # None: DIR/levers.json absent


def missing_bench_files(directory: Path) -> list[str]:
    """The names in BENCH_FILES that `directory` lacks (all of them when it does not exist)."""
    return [name for name in BENCH_FILES if not (Path(directory) / name).is_file()]


def load_bench(directory: Path) -> BenchResults:
    """The three files of one `python -m align_mamba.bench --out DIR` run, and DIR/scan_throughput.csv if any."""
    missing = [str(Path(directory) / name) for name in missing_bench_files(directory)]
    if missing:
        raise DataIntegrityError(f"benchmark output missing: {', '.join(missing)}")
    paths = [Path(directory) / name for name in BENCH_FILES]
    # empty numbers are NaN (d_state: none, for attention), empty text stays ""
    mixers = pd.read_csv(
        paths[0],
        keep_default_na=False,
        na_values=[""],
        dtype={"d_state": "Int64"},
        converters={"reason": str, "backend": str},
    )
    throughput = Path(directory) / SCAN_THROUGHPUT
    levers = Path(directory) / LEVERS
    return BenchResults(
        mixers,
        pd.read_csv(paths[1]),
        json.loads(paths[2].read_text()),
        _read_scan_throughput(throughput) if throughput.is_file() else None,
        _read_levers(levers) if levers.is_file() else None,
    )


LEVER_FIELDS = ("n_layers", "lever", "status", "cell_steps_per_s", "speedup_vs_eager")


def _read_levers(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataIntegrityError(f"{path} is not valid JSON ({err})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and set(LEVER_FIELDS) <= r.keys() for r in rows):
        raise DataIntegrityError(
            f"{path}: expected rows with {', '.join(LEVER_FIELDS)} (written by python -m align_mamba.bench.packing --levers)"
        )
    return data


def levers_table(levers: dict) -> pd.DataFrame:
    """One row per (shape, lever): packed cell-steps/s and the speedup over eager packing measured in
    the same run, one worker's kernel time per step, whether causal-conv1d's fused path ran, the timed
    steps (a file merged from several calls keeps each row's), time-to-first-step, and why a lever did
    not run."""
    rows = sorted(levers["rows"], key=lambda r: (-r["n_layers"], r["lever"] != "eager"))
    return pd.DataFrame(
        [
            {
                "layers": r["n_layers"],
                "lever": r["lever"],
                "cell-steps/s": _number(r["cell_steps_per_s"], 1),
                "ms per cell-step": _number(r.get("ms_per_cell_step"), 1),
                "speedup vs eager": "—" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}x",
                "kernel ms per step (one worker)": _number(_kernel_ms(r), 1),
                "fused Mamba-2 path": _yes_no(r.get("fused")),
                "timed steps": r.get("steps", levers.get("steps", "—")),
                "first step (s)": _number(r.get("first_step_seconds"), 1),
                "status": r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}",
            }
            for r in rows
        ]
    )


def _kernel_ms(row: dict) -> float | None:
    """The profiled worker's GPU kernel time per step. Every packed cell puts this much on the card
    per step, so ms_per_cell_step / this bounds what a lever that cuts launches, not kernels, can gain."""
    return sum(k["ms_per_step"] for k in row["kernel_time"]) if row.get("kernel_time") else None


def _yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")  # None: a row written before it was recorded


def fastest_kernel_time(levers: dict) -> pd.DataFrame:
    """Per shape, the fastest ok lever's kernel-time breakdown: category, ms per step, share."""
    out = []
    for n_layers in sorted({r["n_layers"] for r in levers["rows"]}, reverse=True):
        ok = [r for r in levers["rows"] if r["n_layers"] == n_layers and r["status"] == "ok" and r.get("kernel_time")]
        if not ok:
            continue
        best = max(ok, key=lambda r: r["cell_steps_per_s"])
        out += [
            {
                "layers": n_layers,
                "fastest lever": best["lever"],
                "category": k["category"],
                "ms per step": f"{k['ms_per_step']:.2f}",
                "share": f"{k['share']:.0%}",
                # rows measured before the heaviest kernels were recorded have none
                "largest kernels (ms per step)": "; ".join(
                    f"{top['name'][:60]} ({top['ms_per_step']:.2f})" for top in k.get("largest", [])
                ),
            }
            for k in best["kernel_time"]
        ]
    return pd.DataFrame(out)


def _read_scan_throughput(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, converters={"backend": str, "version": str, "settings": str})
    if "settings" not in frame.columns:  # written before the tagger's inference settings were recorded
        frame.insert(THROUGHPUT_COLUMNS.index("settings"), "settings", "")
    absent = [c for c in THROUGHPUT_COLUMNS if c not in frame.columns]
    if absent:
        raise DataIntegrityError(
            f"{path}: missing column(s) {', '.join(absent)} (written by python -m align_mamba.secrets.throughput)"
        )
    return frame


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
        ax.annotate(
            f"crossover ≈ {found['length']:,.0f} (N={d_state})",
            (found["length"], 0.97),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize="x-small",
        )


def _curves(mixers: pd.DataFrame, column: str, ylabels: dict[str, str], crossover: bool) -> Figure:
    ok = with_series(mixers[mixers["status"] == "ok"])
    modes = [m for m in MODE_TITLES if m in set(mixers["mode"])]
    styles = architecture_styles(ok["series"])
    fig, axes = panels(len(modes))
    for ax, mode in zip(axes, modes):
        panel = ok[(ok["mode"] == mode) & ok[column].notna()]
        for series, line in panel.groupby("series"):
            line = line.sort_values("seq_len")
            ax.plot(line["seq_len"], line[column], label=series, **styles[series], **_line_style(line["kind"].iloc[0]))
        if panel.empty:  # e.g. peak memory of a CPU run, which records none
            ax.text(0.5, 0.5, f"no {ylabels[mode]} recorded", ha="center", va="center", transform=ax.transAxes)
        else:
            log2_axis(ax, panel["seq_len"])
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
    return pd.DataFrame(
        {
            "rung": ladder["rung"],
            "change": ladder["description"],
            "ms / step": [_number(v) for v in ladder["ms_per_step"]],
            "M tokens / s": [_number(v / 1e6, 3) for v in ladder["tokens_per_s"]],
            "× naive": [_number(v) for v in ladder["speedup_vs_naive"]],
            "ran": [f"{s}: {r}" if isinstance(r, str) and r else s for s, r in zip(ladder["status"], ladder["reason"])],
        }
    )


def environment_table(summary: dict) -> pd.DataFrame:
    """Device, dtype and the versions of torch, triton, mamba-ssm and causal-conv1d."""
    items = {
        "device": summary["device"],
        "dtype": summary["dtype"],
        **{name: version or "not installed" for name, version in summary["versions"].items()},
    }
    return pd.DataFrame({"": list(items), "value": list(items.values())})


def provenance_table(mixers: pd.DataFrame) -> pd.DataFrame:
    """Which backend, path and dtype produced the rows of each case, and their statuses."""
    keys = ["kind", "name", "backend", "fused", "dtype"]
    frame = mixers.fillna({"backend": ""})
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        counts = group["status"].value_counts()
        rows.append(
            {
                **dict(zip(keys, key)),
                "rows": len(group),
                "status": ", ".join(f"{status} {counts[status]}" for status in sorted(counts.index)),
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "rows", "status"])


def crossover_table(summary: dict) -> pd.DataFrame:
    """summary.json's crossovers: per mode and d_state, the L where Mamba-2 overtakes attention."""
    rows = []
    for mode, by_state in summary["crossover"].items():
        for d_state, found in by_state.items():
            length, lower, upper = found["length"], found["lower"], found["upper"]
            if length is not None:
                text, measured = f"≈ {length:,.0f}", f"between L = {lower} and {upper}"
            elif upper is not None:
                text, measured = f"≤ {upper}", f"Mamba-2 already faster at the shortest L ({upper})"
            elif lower is not None:
                text, measured = f"> {lower}", f"attention faster up to the longest L ({lower})"
            else:
                text, measured = "—", "no length measured for both"
            rows.append(
                {
                    "mode": MODE_TITLES.get(mode, mode),
                    "d_state": d_state,
                    "crossover L (Mamba-2 tokens/s > attention's)": text,
                    "measured": measured,
                }
            )
    return pd.DataFrame(rows, columns=["mode", "d_state", "crossover L (Mamba-2 tokens/s > attention's)", "measured"])


def wrapper_tax_table(summary: dict) -> pd.DataFrame:
    """summary.json's wrapper tax: per layer, the median and largest raw-over-align-mamba tokens/s ratio."""
    columns = [
        "layer",
        "compared with",
        "median ratio (raw ÷ align-mamba tokens/s)",
        "max ratio",
        "max at",
        "shapes compared",
    ]
    rows = [
        {
            "layer": layer,
            "compared with": WRAPPER_PAIRS.get(layer, "?"),
            columns[2]: _number(tax.get("median_ratio", math.nan)),
            "max ratio": _number(tax["max_ratio"]),
            "max at": f"{tax['mode']}, L = {tax['seq_len']}" + (f", N = {tax['d_state']}" if tax["d_state"] else ""),
            "shapes compared": tax["shapes"],
        }
        for layer, tax in summary["wrapper_tax"].items()
    ]
    return pd.DataFrame(rows, columns=columns)


def _ratio(slower_ms: float, faster_ms: float) -> str:
    """`1.50× faster` / `2.20× slower`: a rung's step time against another's, stated plainly."""
    if faster_ms <= slower_ms:
        return f"{_number(slower_ms / faster_ms)}× faster"
    return f"{_number(faster_ms / slower_ms)}× slower"


def training_sentence(summary: dict, ladder: pd.DataFrame) -> str:
    """Each rung that ran against the rung before it and against rung 0, once, and which rung is
    align_mamba.recall.train's own step."""
    ran = ladder[ladder["status"] == "ok"].sort_values("rung")
    if ran.empty:
        return "No ladder rung ran."
    first = ran.iloc[0]
    parts = []
    for previous, row in zip(ran.iloc[:-1].itertuples(), ran.iloc[1:].itertuples()):
        text = f"rung {row.rung} is {_ratio(previous.ms_per_step, row.ms_per_step)} than rung {previous.rung}"
        if previous.rung != first["rung"]:
            text += f" ({_ratio(first['ms_per_step'], row.ms_per_step)} than rung {first['rung']})"
        parts.append(text)
    text = (
        f"Rung {first['rung']} takes {_number(first['ms_per_step'])} ms per step; " + "; ".join(parts) + "."
        if parts
        else f"Only rung {first['rung']} ran ({_number(first['ms_per_step'])} ms per step)."
    )
    # Found by description, not number: a ladder written by an older rung list stays readable.
    rung = ladder[ladder["description"].astype(str).str.contains(TRAIN_STEP_MARK, regex=False)]
    if rung.empty:
        return f"{text} No rung of this ladder is marked as align_mamba.recall.train's step."
    row = rung.iloc[0]
    if row["status"] != "ok":
        return f"{text} Rung {row['rung']} is align_mamba.recall.train's step; it did not run ({row['status']})."
    return f"{text} Rung {row['rung']} is align_mamba.recall.train's step."


def scan_throughput_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per system × device × file size, pooled over carrier kinds: MiB/s (total bytes ÷ total seconds)
    and findings against planted secrets (a speed means little if the scan reports noise)."""
    keys = ["system", "version", "device", "backend", "settings"]
    pooled = frame.groupby([*keys, "size_mb"], sort=False).agg(
        bytes=("bytes", "sum"), seconds=("seconds", "sum"), findings=("findings", "sum"), planted=("planted", "sum")
    )
    pooled["rate"] = [_number(b / MIB / s) if s > 0 else "—" for b, s in pooled[["bytes", "seconds"]].values]
    pooled["found"] = [f"{int(f)} / {int(p)}" for f, p in pooled[["findings", "planted"]].values]
    columns = []
    for size in sorted(pooled.index.get_level_values("size_mb").unique()):
        columns += [
            (size, "rate", f"{size:g} MiB file: MiB/s"),
            (size, "found", f"{size:g} MiB file: findings / planted"),
        ]
    wide = pd.DataFrame({name: pooled[field].unstack("size_mb")[size] for size, field, name in columns})
    return wide.fillna("—").reset_index()


def bench_metrics(summary: dict) -> dict[str, float | int]:
    """Flat headline numbers: bench.training_speedup (and its rung), bench.crossover.<mode>.ds<N>
    (interpolated crossovers only), bench.wrapper_tax.<layer> and bench.max_wrapper_tax."""
    metrics: dict[str, float | int] = {}
    final = summary.get("training_speedup")
    if final is not None and final["speedup_vs_naive"] is not None:
        metrics["bench.training_speedup"] = float(final["speedup_vs_naive"])
        metrics["bench.training_speedup_rung"] = int(final["rung"])
    for mode, by_state in summary["crossover"].items():
        for d_state, found in by_state.items():
            if found["length"] is not None:
                metrics[f"bench.crossover.{mode}.ds{d_state}"] = float(found["length"])
    ratios = {layer: tax["max_ratio"] for layer, tax in summary["wrapper_tax"].items() if tax["max_ratio"] is not None}
    metrics.update({f"bench.wrapper_tax.{layer}": float(ratio) for layer, ratio in ratios.items()})
    if ratios:
        metrics["bench.max_wrapper_tax"] = float(max(ratios.values()))
    return metrics
