"""The report's figures, drawn on matplotlib's Agg canvas.

Figures are built as `matplotlib.figure.Figure` objects with an explicit Agg canvas rather than
through pyplot, so the report runs headless and leaves no global figure state behind.
"""

from __future__ import annotations

import io
import math

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

MARKERS = "osD^v<>ph*XP"
PANEL_INCHES = (4.4, 3.4)
DPI = 110


def architecture_styles(architectures) -> dict[str, dict]:
    """One colour and marker per architecture, the same in every figure (sorted, so stable)."""
    colors = matplotlib.colormaps["tab10"].colors
    return {
        arch: {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
        for i, arch in enumerate(sorted(set(architectures)))
    }


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
