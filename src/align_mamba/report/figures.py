"""The report's figures, drawn on matplotlib's Agg canvas.

Figures are built as `matplotlib.figure.Figure` objects with an explicit Agg canvas rather than
through pyplot, so the report runs headless and leaves no global figure state behind.
"""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from align_mamba.report.tables import BREAKDOWNS

MARKERS = "osD^v<>ph*XP"
PANEL_INCHES = (4.4, 3.4)
DPI = 110


def architecture_styles(architectures) -> dict[str, dict]:
    """One colour and marker per architecture, the same in every figure (sorted, so stable)."""
    colors = matplotlib.colormaps["tab10"].colors
    return {arch: {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
            for i, arch in enumerate(sorted(set(architectures)))}


def panels(count: int, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    """A figure with `count` panels on a grid at most `max_cols` wide; spare slots hidden."""
    cols = max(1, min(count, max_cols))
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for spare in axes[count:]:
        spare.set_visible(False)
    return fig, axes[:count]


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG; no Software metadata, so an unchanged report gives identical bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def log2_axis(ax: Axes, values, which: str = "x") -> None:
    """A log2 axis ticked at the grid values (also sensible with a single value)."""
    ticks = sorted(set(int(v) for v in values))
    getattr(ax, f"set_{which}scale")("log", base=2)
    getattr(ax, f"set_{which}ticks")(ticks, labels=[str(t) for t in ticks])
    getattr(ax, f"{which}axis").set_minor_locator(NullLocator())
    if len(ticks) == 1:  # a log axis needs a span; give one point an octave each side
        getattr(ax, f"set_{which}lim")(ticks[0] / 2, ticks[0] * 2)


def _clipped_ci(line: pd.DataFrame) -> list:
    """Error bars of the CI cut at 0 and 1: accuracy cannot leave them (n=1: no bar)."""
    half = line["acc_ci"].fillna(0.0)
    return [half.clip(upper=line["acc_mean"]), half.clip(upper=1 - line["acc_mean"])]


def cliff_figure(summary: pd.DataFrame, threshold: float) -> Figure:
    """Accuracy vs num_pairs, one panel per d_state, one line per architecture, 95% CI error bars."""
    d_states = sorted(summary["d_state"].unique())
    styles = architecture_styles(summary["architecture"])
    fig, axes = panels(len(d_states))
    for ax, d_state in zip(axes, d_states):
        panel = summary[summary["d_state"] == d_state]
        for arch, line in panel.groupby("architecture"):
            line = line.sort_values("num_pairs")
            ax.errorbar(line["num_pairs"], line["acc_mean"], yerr=_clipped_ci(line), capsize=3,
                        label=arch, **styles[arch])
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
        log2_axis(ax, summary["num_pairs"])
        ax.set(ylim=(0, 1.02), title=f"d_state = {d_state}", xlabel="num_pairs (log2)", ylabel="accuracy")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    return fig


def heatmap_figure(summary: pd.DataFrame) -> Figure:
    """Mean accuracy over (d_state × num_pairs), one annotated panel per architecture."""
    architectures = sorted(summary["architecture"].unique())
    num_pairs, d_states = sorted(summary["num_pairs"].unique()), sorted(summary["d_state"].unique())
    fig, axes = panels(len(architectures))
    image = None
    for ax, arch in zip(axes, architectures):
        grid = (summary[summary["architecture"] == arch]
                .pivot(index="d_state", columns="num_pairs", values="acc_mean")
                .reindex(index=d_states, columns=num_pairs))  # same axes in every panel; gaps stay blank
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="lower")
        for row, col in zip(*np.nonzero(~np.isnan(values))):
            ax.text(col, row, f"{values[row, col]:.2f}", ha="center", va="center", fontsize="small",
                    color="white" if values[row, col] < 0.5 else "black")
        ax.set_xticks(range(len(num_pairs)), labels=[str(v) for v in num_pairs])
        ax.set_yticks(range(len(d_states)), labels=[str(v) for v in d_states])
        ax.set(title=arch, xlabel="num_pairs", ylabel="d_state")
    fig.colorbar(image, ax=axes, label="mean accuracy", shrink=0.8)
    return fig


def capacity_figure(capacity: pd.DataFrame, threshold: float) -> Figure:
    """Capacity vs state size in floats (log-log); hollow markers are lower bounds ("≥ N")."""
    fig, (ax,) = panels(1)
    reached = capacity[capacity["capacity"] > 0]
    if reached.empty:
        ax.text(0.5, 0.5, f"no architecture reached accuracy ≥ {threshold:g}\nat any grid point",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    styles = architecture_styles(capacity["architecture"])
    for arch, points in reached.groupby("architecture"):
        points, style = points.sort_values("state_at_capacity"), styles[arch]
        ax.plot(points["state_at_capacity"], points["capacity"], label=arch, markersize=7, **style)
        lower = points[points["censored"]]  # overdrawn hollow: still passing at the largest num_pairs
        ax.plot(lower["state_at_capacity"], lower["capacity"], linestyle="none", marker=style["marker"],
                markersize=7, markerfacecolor="white", markeredgecolor=style["color"])
    ax.set_xscale("log")
    log2_axis(ax, reached["capacity"], which="y")
    ax.set(xlabel="state size at capacity (floats, log)", ylabel=f"capacity: num_pairs with accuracy ≥ {threshold:g}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="best")
    return fig


def breakdown_figure(breakdowns: dict[str, pd.DataFrame]) -> Figure:
    """One panel per breakdown (name → long frame from tables.breakdown), one line per series."""
    fig, axes = panels(len(breakdowns), max_cols=2)
    for ax, (name, long) in zip(axes, breakdowns.items()):
        buckets = long[["order", "bucket"]].drop_duplicates().sort_values("order")["bucket"].tolist()
        position = {bucket: i for i, bucket in enumerate(buckets)}
        styles = architecture_styles(long["architecture"])
        for (series, arch), line in long.groupby(["series", "architecture"]):
            ax.plot(line["bucket"].map(position), line["accuracy"], label=series, **styles[arch])
        ax.set_xticks(range(len(buckets)), labels=buckets, rotation=45, ha="right", fontsize="small")
        ax.set(ylim=(0, 1.02), xlabel=BREAKDOWNS[name], ylabel="accuracy (mean over seeds)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    return fig
