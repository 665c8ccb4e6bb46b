"""The report document: its sections, rendered once as Markdown (figures as files next to it) and
once as self-contained HTML (figures inlined as base64 PNG), and every output written atomically.

Sections are built as plain data (text, tables, figures) so both renderings show the same numbers.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from align_mamba.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, null_non_finite
from align_mamba.core.errors import ConfigError
from align_mamba.report import bench, figures, secrets, selection, tables

TITLE = "align-mamba: MQAR recall across the grid"
CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}img{max-width:100%}
code{background:#f2f2f2;padding:0 .2rem}.warning{border:2px solid #c00;background:#fee;padding:.5rem 1rem;font-weight:bold}
figcaption{font-size:.85rem;color:#555}"""


@dataclass(frozen=True)
class Text:
    """A paragraph; `code` and **bold** are the only markup. `loud` makes it a warning box."""

    body: str
    loud: bool = False


@dataclass(frozen=True)
class Table:
    """A table of already formatted values (the same strings in both renderings)."""

    frame: pd.DataFrame


@dataclass(frozen=True)
class Image:
    """A figure: written to figures/<name>.png for the Markdown, inlined in the HTML."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """A titled part of the report: its blocks in order."""

    title: str
    blocks: tuple


def _listing(values) -> str:
    """`16, 64, 128`: the distinct values, sorted."""
    return ", ".join(str(v) for v in sorted(set(values)))


def _header(grid: tables.Grid, summary: pd.DataFrame, command: str) -> Section:
    """What was run, whether the grid is complete, and how to regenerate the report."""
    cells = grid.cells
    full = cells["architecture"].nunique() * cells["num_pairs"].nunique() * cells["d_state"].nunique()
    what = pd.DataFrame({"": ["cells (metrics files)", "architectures", "num_pairs", "d_state", "seeds",
                              "grid points run"],
                         "run": [len(cells), _listing(cells["architecture"]), _listing(cells["num_pairs"]),
                                 _listing(cells["d_state"]), _listing(cells["seed"]), f"{len(summary)} of {full}"]})
    return Section("What was run", (Table(what), Text(f"Regenerate with `{command}` (in the pipeline: `dvc repro report`); cells.csv has one row per "
                                                      f"cell and metrics.json the headline numbers.")))


def _every_cell(summary: pd.DataFrame) -> Section:
    note = Text("Accuracy is per query, exact match per sequence (every query right), both on the cell's own "
                "test split; ± is the half-width of the 95% Student t-interval over seeds. Train accuracy is on the "
                "first examples of the cell's training split (`train_examples_checked` in its metrics file): far "
                "above the test accuracy, the model memorised its training contexts rather than learning recall "
                "(— where the metrics predate that check). State size counts the floats kept about the context "
                "(SSM state plus attention's key/value reads).")
    return Section("Every cell", (note, Table(tables.cells_display(summary))))


def _cliff(summary: pd.DataFrame, threshold: float) -> Section:
    png = figures.png_bytes(figures.cliff_figure(summary, threshold))
    return Section("The cliff", (Image("cliff", f"Accuracy vs num_pairs per d_state; error bars are 95% CIs over "
                                                f"seeds, dotted line the capacity threshold {threshold:g}.", png),))


def _heatmap(summary: pd.DataFrame) -> Section:
    png = figures.png_bytes(figures.heatmap_figure(summary))
    return Section("Heatmap", (Image("heatmap", "Mean accuracy over num_pairs × d_state, per architecture "
                                                "(blank: not run).", png),))


def _capacity(capacity: pd.DataFrame, threshold: float) -> Section:
    note = Text(f"Capacity: the largest num_pairs whose mean accuracy is ≥ {threshold:g}; **none** when no grid "
                f"point reaches it, **≥ N** when even the largest num_pairs tested passes (a lower bound).")
    png = figures.png_bytes(figures.capacity_figure(capacity, threshold))
    caption = "Capacity vs state size at capacity (log-log); hollow markers are lower bounds (≥ N)."
    return Section("Capacity", (note, Table(tables.capacity_display(capacity, threshold)),
                                Image("capacity", caption, png)))


def _failures(grid: tables.Grid) -> Section:
    panels = {name: tables.breakdown(grid, name) for name in tables.BREAKDOWNS}
    panels = {name: long for name, long in panels.items() if not long.empty}
    blocks = [Text("Accuracy by where the queried key sits in the context (deciles: lost in the middle?) and by "
                   "key→query distance, on each architecture's largest num_pairs (at its largest d_state), "
                   "mean over seeds.")]
    if not panels:
        return Section("Where recall fails", (*blocks, Text("The metrics files hold no breakdowns.")))
    caption = "Accuracy by " + " and by ".join(tables.BREAKDOWNS[name] for name in panels) + "."
    blocks.append(Image("where_recall_fails", caption, figures.png_bytes(figures.breakdown_figure(panels))))
    for name, long in panels.items():
        blocks += [Text(f"By {tables.BREAKDOWNS[name]}:"), Table(tables.breakdown_display(long))]
    return Section("Where recall fails", tuple(blocks))


def _learning_rate(chosen: pd.DataFrame, threshold: float) -> list[Section]:
    """Entries differing only in their learning rate, reduced to the best on validation
    (`chosen`: selection.select_on_validation; empty: no section)."""
    if chosen.empty:
        return []
    note = Text("Grid entries that build the same model and differ only in training settings (their own `lr`) "
                "form a family. Per seed, the member with the best **validation** accuracy is kept, and its test "
                "accuracy is shown. The test split takes no part in the choice. One learning rate alone can "
                "fake a capacity cliff: MQAR is learned only inside a narrow learning-rate window.")
    return [Section("Learning rate chosen on validation",
                    (note, Table(selection.selection_display(chosen)), Text("Capacity of the chosen cells:"),
                     Table(selection.family_capacity(chosen, threshold))))]


def _hypotheses(summary: pd.DataFrame) -> Section:
    note = Text("The **hypothesis** column is what the project brief expected, not a result; **measured** is "
                "mean ± 95% CI over seeds of the matching cells (`[]` is the decoder-only mamba2).")
    return Section("Hypothesis vs measured", (note, Table(tables.hypothesis_table(summary))))


def _provenance(cells: pd.DataFrame) -> Section:
    blocks = [Text("Which backend (`kernels`: mamba-ssm; `reference`: pure PyTorch) and device trained and "
                   "evaluated the cells; cells.csv has it per cell."), Table(tables.provenance_table(cells))]
    off = tables.off_kernel_cells(cells)
    if not off.empty:
        names = ", ".join(off["cell"].head(20)) + (f" and {len(off) - 20} more" if len(off) > 20 else "")
        blocks.insert(0, Text(f"WARNING: {len(off)} of {len(cells)} cells ran on the pure-PyTorch reference "
                              f"backend or on CPU (training or evaluation): {names}.", loud=True))
    return Section("Provenance", tuple(blocks))


def _benchmark(directory: Path) -> tuple[Section, dict]:
    """Speed and memory against L, crossovers, wrapper tax, the training ladder, provenance, scan MiB/s."""
    title = "Benchmark"
    missing = bench.missing_bench_files(directory)
    if missing:
        return Section(title, (Text(f"No benchmark results: {directory} lacks {', '.join(missing)}; produce them "
                                    f"with `python -m align_mamba.bench --out {directory}`."),)), {}
    results = bench.load_bench(directory)
    summary, mixers = results.summary, results.mixers
    blocks = [Text(f"From `python -m align_mamba.bench` ({directory}): median of timed repeats after warm-up; "
                   f"dashed lines are the bare mamba-ssm / SDPA layers, dotted ones whole models."),
              Table(bench.environment_table(summary)),
              Image("bench_throughput", "Tokens/s against sequence length (log-log), per mode; the dash-dot line "
                    "is the interpolated attention/Mamba-2 crossover.",
                    figures.png_bytes(bench.throughput_figure(mixers))),
              Image("bench_memory", "Peak memory above the inputs (forward, train; GPU only) and cache/state size "
                    "(decode) against L (log-log).", figures.png_bytes(bench.memory_figure(mixers))),
              Text("Crossover: the L where Mamba-2's tokens/s first exceeds attention's, per mode and d_state."),
              Table(bench.crossover_table(summary))]
    tax = bench.wrapper_tax_table(summary)
    blocks += ([Text("Wrapper tax: bare layer's tokens/s ÷ align-mamba's, the largest over the shapes both ran "
                     "(> 1: align-mamba's layer is slower)."), Table(tax)] if not tax.empty else
               [Text("Wrapper tax: no shape ran both an align-mamba layer and its bare mamba-ssm / SDPA twin.")])
    blocks += [Text("Training-step ladder: each rung adds one change to the rung before it. "
                    + bench.training_sentence(summary, results.ladder)), Table(bench.ladder_table(results.ladder)),
               Text("Provenance: which backend, path and dtype produced each case's rows."),
               Table(bench.provenance_table(mixers))]
    if summary["device_type"] == "cpu":
        blocks.insert(0, Text(f"WARNING: the benchmark ran on {summary['device']}, not a GPU: these numbers do "
                              f"not describe the CUDA kernels.", loud=True))
    blocks += _scan_throughput(directory, results.scan_throughput)
    return Section(title, tuple(blocks)), bench.bench_metrics(summary)


def _scan_throughput(directory: Path, frame: pd.DataFrame | None) -> list:
    """The scan-throughput table, or one line on how to produce scan_throughput.csv."""
    path = directory / bench.SCAN_THROUGHPUT
    if frame is None:
        return [Text(f"No scan throughput ({path}): run `python -m align_mamba.secrets.throughput "
                     f"--checkpoint RUN/model.pt --out {path}`.")]
    return [Text("Scan throughput (`python -m align_mamba.secrets.throughput`): MiB/s (2^20 bytes) of whole scans, "
                 "total bytes ÷ total seconds over the carrier kinds; baselines include their start-up."),
            Table(bench.scan_throughput_table(frame))]


def _secret_spans(directory: Path, taggers: list[str] | None) -> tuple[Section, dict]:
    """Headline table, the tagger-vs-CredSweeper sentence, per-format recall, recall figures."""
    title = "Secret spans"
    results = secrets.load_secrets(directory, taggers)
    runs, breakdowns = results.runs, results.breakdowns
    notes = [Text(note) for note in results.notes]
    if runs.empty:
        return Section(title, tuple(notes)), {}
    blocks = [*notes, Text("Span P / R / F1: predicted spans (merged) matched one-to-one to true spans at IoU ≥ 0.5; "
                           "hit rate: true spans overlapped by any prediction; byte F1 over all bytes; false alarms: "
                           "predictions overlapping no secret, per MB (10^6 bytes) of test_decoys; MB/s: bytes of "
                           "the splits ÷ scan time (CredSweeper's includes its start-up)."),
              Table(secrets.headline_table(runs)), Text(secrets.comparison_sentence(runs))]
    mismatched = secrets.mismatched_splits(runs)
    if mismatched:
        blocks.insert(0, Text(f"WARNING: systems were scored on different files in {', '.join(mismatched)}: "
                              f"their numbers are not comparable.", loud=True))
    if set(runs["split"]) & set(secrets.SCORED):
        blocks += [Text("Span recall per format with its Wilson 95% interval; **held out** formats appear only in "
                        "test_unseen, never in training."), Table(secrets.per_format_table(breakdowns))]
        for breakdown, (name, axis) in secrets.FIGURES.items():
            png = figures.png_bytes(secrets.recall_figure(breakdowns, breakdown))
            blocks.append(Image(name, f"Span recall by {axis}, one line per system; bars are Wilson 95% "
                                      f"intervals, dashed lines baselines.", png))
    return Section(title, tuple(blocks)), secrets.secret_metrics(runs)


def build_sections(grid: tables.Grid, threshold: float, command: str, bench_dir: Path | None = None,
                   secrets_dir: Path | None = None, taggers: list[str] | None = None) -> tuple[list[Section], dict]:
    """The report's sections in order, and the flat headline metrics.

    bench_dir / secrets_dir (None: that section is left out) add the benchmark and secret-span
    sections; a directory without results gives its section one line saying how to produce them.
    taggers: the tagger folders of secrets_dir to report (None: every one with a summary.json).
    """
    summary = tables.summarize(grid.cells)
    capacity = tables.capacity_table(summary, threshold)
    chosen = selection.select_on_validation(grid.cells)
    sections = [_header(grid, summary, command), _every_cell(summary), _cliff(summary, threshold),
                _heatmap(summary), _capacity(capacity, threshold), *_learning_rate(chosen, threshold),
                _failures(grid), _hypotheses(summary), _provenance(grid.cells)]
    metrics = tables.headline_metrics(grid.cells, capacity)
    if not chosen.empty:
        metrics.update(selection.family_metrics(chosen, threshold))
    extras = [_benchmark(Path(bench_dir))] if bench_dir is not None else []
    extras += [_secret_spans(Path(secrets_dir), taggers)] if secrets_dir is not None else []
    for section, headline in extras:
        sections.append(section)
        metrics.update(headline)
    return sections, dict(sorted(metrics.items()))


def _markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table; written by hand so the package needs no `tabulate`."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(sections: list[Section]) -> str:
    """Markdown with figures referenced as figures/<name>.png (relative to the report)."""
    parts = [f"# {TITLE}"]
    for section in sections:
        parts.append(f"## {section.title}")
        for block in section.blocks:
            if isinstance(block, Text):
                parts.append(f"> **{block.body}**" if block.loud else block.body)
            elif isinstance(block, Table):
                parts.append(_markdown_table(block.frame))
            else:
                parts.append(f"![{block.caption}](figures/{block.name}.png)\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def _inline_html(text: str) -> str:
    """Escaped text with the Markdown subset Text allows (`code`, **bold**) turned into tags."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _html_block(block) -> str:
    """One Text, Table or Image as HTML; images become base64 data: URIs (no external file)."""
    if isinstance(block, Text):
        return f'<p class="warning">{_inline_html(block.body)}</p>' if block.loud else f"<p>{_inline_html(block.body)}</p>"
    if isinstance(block, Table):
        return block.frame.to_html(index=False, border=0, na_rep="—")
    data = base64.b64encode(block.png).decode("ascii")
    caption = html.escape(block.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def render_html(sections: list[Section]) -> str:
    """One self-contained page: inline CSS, tables from pandas, figures as data: URIs."""
    body = [f"<h1>{html.escape(TITLE)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [_html_block(block) for block in section.blocks]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(cells_dir: Path, out_dir: Path, threshold: float = 0.9, command: str | None = None,
                 expected: list[Path] | None = None, bench_dir: Path | None = None,
                 secrets_dir: Path | None = None, taggers: list[str] | None = None) -> dict:
    """Load the metrics files under `cells_dir` (exactly `expected`, if given) and write the report,
    with the benchmark and secret-span sections when `bench_dir` / `secrets_dir` are given.

    Writes report.md, report.html, figures/*.png, cells.csv and metrics.json; returns the metrics.
    """
    if not 0 < threshold <= 1:
        raise ConfigError(f"--capacity-threshold must be in (0, 1], got {threshold}")
    out_dir = Path(out_dir)
    params = "--params params.yaml " if expected is not None else ""
    extra = "".join(f" --{flag} {value}" for flag, value in (("bench", bench_dir), ("secrets", secrets_dir))
                    if value is not None)
    command = command or (f"python -m align_mamba.report --cells {cells_dir} {params}--out {out_dir} "
                          f"--capacity-threshold {threshold:g}{extra}")
    grid = tables.load_grid(cells_dir, expected)
    sections, metrics = build_sections(grid, threshold, command, bench_dir, secrets_dir, taggers)
    for block in (b for s in sections for b in s.blocks if isinstance(b, Image)):
        atomic_write_bytes(out_dir / "figures" / f"{block.name}.png", block.png)
    atomic_write_text(out_dir / "cells.csv", grid.cells.to_csv(index=False))
    atomic_write_json(out_dir / "metrics.json", null_non_finite(metrics))  # a metric no cell measured is null
    atomic_write_text(out_dir / "report.md", render_markdown(sections))
    atomic_write_text(out_dir / "report.html", render_html(sections))
    return metrics
