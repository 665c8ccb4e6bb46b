"""The report stage: every cell's typed metrics → one section per experiment, figures, report.md / report.html.

`python -m align_mamba.report --params params.yaml --cells DIR --out DIR` runs it; `write_report` is the same from Python.
"""

from align_mamba.report.render import build_sections, render_html, render_markdown, write_report

__all__ = ["build_sections", "render_html", "render_markdown", "write_report"]
