"""The report stage: every cell's metrics JSON → tables, figures, report.md / report.html.

`python -m align_mamba.report --cells DIR --out DIR` runs it; `write_report` is the same from Python.
"""

from align_mamba.report.render import build_sections, render_html, render_markdown, write_report
from align_mamba.report.tables import (
    HYPOTHESES,
    Grid,
    Hypothesis,
    breakdown,
    capacity_table,
    format_mean_ci,
    headline_metrics,
    hypothesis_table,
    load_grid,
    mean_ci,
    summarize,
)

__all__ = [
    "HYPOTHESES", "Grid", "Hypothesis", "breakdown", "build_sections", "capacity_table", "format_mean_ci",
    "headline_metrics", "hypothesis_table", "load_grid", "mean_ci", "render_html", "render_markdown",
    "summarize", "write_report",
]
