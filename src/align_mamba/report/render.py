"""The report document: its sections, rendered once as Markdown (figures as files next to it) and
once as self-contained HTML (figures inlined as base64 PNG), and every output written atomically.

Sections are built as plain data (text, tables, figures) so both renderings show the same numbers.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from align_mamba.core.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, null_non_finite
from align_mamba.core.errors import ConfigError
from align_mamba.recall import schedule
from align_mamba.recall.params import CONFIRM_ID_SUFFIX, Cell, RecallParams, ReportSettings
from align_mamba.report import bench, experiments, figures, secrets, stats

TITLE = "align-mamba: MQAR recall, experiment by experiment"
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


def run_kind(runs: list[experiments.Run]) -> str:
    """What kind of run the cells are (device and backend that trained them), and where GPU results live."""
    devices = sorted({r.metrics.train_device for r in runs})
    backends = sorted({r.metrics.train_backend for r in runs})
    on_gpu = [d for d in devices if d.startswith("cuda")]
    if not on_gpu:
        kind = (
            "**A CPU run** (the default params.yaml is sized for a 2-core CPU): its numbers show the study in "
            "miniature, not the study's answer."
        )
    elif len(on_gpu) == len(devices):
        kind = "**A GPU run**."
    else:
        kind = "**A mixed run**: some cells trained on a CPU, some on a GPU."
    return (
        f"{kind} {len(runs)} cells trained on {', '.join(devices)} with the {', '.join(backends)} backend. "
        f"GPU results of the full study: results/gpu/ (its README says which runs they are)."
    )


def _header(runs: list[experiments.Run], results: list[experiments.ExperimentResult], command: str) -> Section:
    lines = [Text(run_kind(runs))]
    lines += [Text(line) for result in results for line in result.verdict_lines()]
    lines.append(
        Text(
            f"Verdict rule: {stats.VERDICT_RULE.format(min_seeds=stats.MIN_SEEDS)} Intervals are "
            f"percentile bootstraps over seeds (capacity, slope, mean accuracy) or Wilson intervals "
            f"(seeds learned)."
        )
    )
    lines.append(
        Text(
            f"Regenerate with `{command}` (in the pipeline: `dvc repro report`); cells.csv has one row per "
            f"cell and metrics.json the headline numbers."
        )
    )
    return Section("What this run shows", tuple(lines))


def _experiment(
    result: experiments.ExperimentResult, runs: list[experiments.Run], not_run: list[str], skipped: list[str]
) -> Section:
    exp, t = result.experiment, result.threshold
    blocks: list = [Text(exp.question)] if exp.question else []
    if skipped:
        blocks.append(
            Text(
                f"{len(skipped)} cell(s) of this experiment's grid were not needed (skipped.txt): by the lead-rate "
                "rule (`python -m align_mamba.recall.schedule`) a grid point's first seed runs every rate, and "
                "another seed runs the rest of its sweep only if it failed on validation at the rate that was "
                "best for the first seed; these seeds learned there (or at another rate they ran first). A "
                "seed still counts as failed only after every rate failed."
            )
        )
    if not_run:
        ran = sum(len(p.kept) for p in result.points)
        blocks.append(
            Text(
                f"Partial: {len(not_run)} cell(s) of this experiment have not run yet (listed in not_run.txt); "
                f"what follows rests on the {ran} kept seed-run(s) that have. A missing cell is never filled in.",
                loud=True,
            )
        )
    if exp.expect:
        blocks += [
            Text("Hypotheses (from params.yaml, not results) against what was measured:"),
            Table(experiments.hypothesis_table(result)),
        ]
    else:
        blocks.append(Text("No hypothesis rows in params.yaml for this experiment (`expect:`)."))
    if not result.points:  # a study under way: nothing of this experiment to tabulate or plot yet
        blocks.append(Text("No cell of this experiment has run yet."))
        return Section(f"Experiment {exp.name}", tuple(blocks))
    blocks += [
        Text(
            f"Every grid point. Per (architecture, num_pairs, d_state, seed) the learning rate best on "
            f"**validation** accuracy is kept (the test split chooses nothing; a rate's rerun at twice the step "
            f"budget, where one ran, stands in for its first run). A seed has learned when its "
            f"test accuracy is ≥ {t:g}; a failed seed counts as failed only if its rerun at twice the step "
            f"budget failed too. A failure is a **chance plateau** when its final training loss is within "
            f"{stats.PLATEAU_TOLERANCE:.0%} of ln(#values), the loss of a uniform guess (optimisation never "
            f"started), **no recall** when the loss left it but accuracy stayed below "
            f"{stats.PARTIAL_RECALL_MIN:g}, else **partial recall**. Steps to learn: the first validation step at ≥ {t:g}. "
            f"A kept rate at the highest or lowest of 3 or more rates run is marked so: the best rate may lie "
            f"beyond the sweep."
        ),
        Table(experiments.points_table(result)),
    ]
    rates = experiments.rate_table(result)
    if not rates.empty:
        blocks += [
            Text(
                f"Every learning rate of the sweep at 1× budget: seeds at test accuracy ≥ {t:g} / seeds run "
                f"(mean test accuracy). The table above keeps one rate per seed; this one shows how wide "
                f"each architecture's window of trainable rates is."
            ),
            Table(rates),
        ]
    blocks += [
        Text(
            "Capacity per seed: the largest num_pairs it learned (a seed with none counts 0 in the mean; "
            "∞ as the interval's top: a seed still learned the largest num_pairs tested; * a seed whose "
            "capacity can still rise: cells of it at more pairs, or a failure's due 2× rerun, still to run)."
        ),
        Table(experiments.capacity_table(result)),
    ]
    blocks.append(
        Image(
            f"cliff_{exp.name}",
            f"{exp.name}: test accuracy against num_pairs, one panel per d_state; "
            f"lines are means over seeds, dots single seeds, dotted the threshold {t:g}.",
            figures.png_bytes(experiments.cliff_figure(result)),
        )
    )
    capacity = experiments.capacity_figure(result)
    if capacity is not None:
        blocks.append(
            Image(
                f"capacity_{exp.name}",
                f"{exp.name}: mean capacity against state size in floats "
                f"(log-log), bootstrap intervals; the legend gives each fitted slope.",
                figures.png_bytes(capacity),
            )
        )
    one = {experiments.series(r.metrics): r.metrics for p in result.points for r in p.kept}
    by_k = experiments.single_position_series(result, one)
    if by_k:
        blocks.append(
            Image(
                f"positions_{exp.name}",
                f"{exp.name}: accuracy, steps to learn and the seeds that learned at each rate against the one "
                f"decoder layer k that cross-attends ("
                + ", ".join(f"k={k}: {result.label(s)}" for k, s in by_k.items())
                + ").",
                figures.png_bytes(experiments.position_figure(result, by_k)),
            )
        )
    return Section(f"Experiment {exp.name}", tuple(blocks))


def _provenance(runs: list[experiments.Run]) -> Section:
    frame = pd.DataFrame(
        [
            {
                "train backend": r.metrics.train_backend,
                "train device": r.metrics.train_device,
                "eval backend": r.metrics.backend,
                "eval device": r.metrics.device,
            }
            for r in runs
        ]
    )
    counts = frame.value_counts().rename("cells").reset_index()
    return Section(
        "Provenance",
        (
            Text(
                "Which backend (`kernels`: mamba-ssm; `reference`: pure PyTorch) and device "
                "trained and evaluated the cells; cells.csv has it per cell."
            ),
            Table(counts),
        ),
    )


def cells_frame(runs: list[experiments.Run], threshold: float) -> pd.DataFrame:
    """cells.csv: one row per cell, typed fields only."""
    rows = []
    for r in runs:
        m = r.metrics
        rows.append(
            {
                "cell": m.cell.id,
                "architecture": m.architecture,
                "num_pairs": m.num_pairs,
                "d_state": m.d_state,
                "lr": m.lr,
                "seed": m.seed,
                "experiments": " ".join(m.cell.experiments),
                "accuracy": m.accuracy,
                "exact_match": m.exact_match,
                "val_accuracy": m.val_accuracy,
                "train_accuracy": m.train_accuracy,
                "steps_trained": m.steps_trained,
                "steps_to_learn": m.steps_to_learn(threshold),
                "final_train_loss": m.final_train_loss,
                "chance_loss": m.chance_loss,
                "state_total": m.state_size.total,
                "parameters": m.parameters,
                "train_backend": m.train_backend,
                "train_device": m.train_device,
                "eval_backend": m.backend,
                "eval_device": m.device,
                "outcome": r.outcome(threshold),
                "rerun_accuracy": r.rerun.accuracy if r.rerun else None,
            }
        )
    return pd.DataFrame(rows)


def _benchmark(directory: Path) -> tuple[Section, dict]:
    """Speed and memory against L, crossovers, wrapper tax, the training ladder, provenance, scan MiB/s."""
    title = "Benchmark"
    missing = bench.missing_bench_files(directory)
    if missing:
        return Section(
            title,
            (
                Text(
                    f"No benchmark results: {directory} lacks {', '.join(missing)}; produce them "
                    f"with `python -m align_mamba.bench --out {directory}`."
                ),
            ),
        ), {}
    results = bench.load_bench(directory)
    summary, mixers = results.summary, results.mixers
    blocks = [
        Text(
            f"From `python -m align_mamba.bench` ({directory}): median of timed repeats after warm-up; "
            f"dashed lines are the bare mamba-ssm / SDPA layers, dotted ones whole models."
        ),
        Table(bench.environment_table(summary)),
        Image(
            "bench_throughput",
            "Tokens/s against sequence length (log-log), per mode; the dash-dot line "
            "is the interpolated attention/Mamba-2 crossover.",
            figures.png_bytes(bench.throughput_figure(mixers)),
        ),
        Image(
            "bench_memory",
            "Peak memory above the inputs (forward, train; GPU only) and cache/state size "
            "(decode) against L (log-log).",
            figures.png_bytes(bench.memory_figure(mixers)),
        ),
        Text("Crossover: the L where Mamba-2's tokens/s first exceeds attention's, per mode and d_state."),
        Table(bench.crossover_table(summary)),
    ]
    tax = bench.wrapper_tax_table(summary)
    blocks += (
        [
            Text(
                "Wrapper tax: bare layer's tokens/s ÷ align-mamba's, the largest over the shapes both ran "
                "(> 1: align-mamba's layer is slower)."
            ),
            Table(tax),
        ]
        if not tax.empty
        else [Text("Wrapper tax: no shape ran both an align-mamba layer and its bare mamba-ssm / SDPA twin.")]
    )
    blocks += [
        Text(
            "Training-step ladder: each rung adds one change to the rung before it. "
            + bench.training_sentence(summary, results.ladder)
        ),
        Table(bench.ladder_table(results.ladder)),
        Text("Provenance: which backend, path and dtype produced each case's rows."),
        Table(bench.provenance_table(mixers)),
    ]
    if summary["device_type"] == "cpu":
        blocks.insert(
            0,
            Text(
                f"WARNING: the benchmark ran on {summary['device']}, not a GPU: these numbers do "
                f"not describe the CUDA kernels.",
                loud=True,
            ),
        )
    blocks += _scan_throughput(directory, results.scan_throughput)
    if results.levers is not None:
        blocks += _levers(results.levers)
    return Section(title, tuple(blocks)), bench.bench_metrics(summary)


def _levers(levers: dict) -> list:
    """The training-speed levers measured packed on one GPU, and where the fastest one's time goes."""
    blocks = [
        Text(
            f"Training-speed levers (`python -m align_mamba.bench.packing --levers`): {levers['slots']} cells packed "
            f"on {levers['device']}, each lever against eager packing measured in the same run; first step: process "
            f"start to the end of the first training step (kernel cache at `ALIGN_MAMBA_CACHE_DIR`). Each cell's step puts "
            f"its kernel time on the one card, so where the kernel ms per step is near the ms per cell-step the card "
            f"is busy with kernels, and only a lever that shortens them can pay."
        ),
        Table(bench.levers_table(levers)),
    ]
    kernels = bench.fastest_kernel_time(levers)
    if not kernels.empty:
        blocks += [
            Text("Where a step's kernel time goes on the fastest path of each shape (torch.profiler, one worker)."),
            Table(kernels),
        ]
    return blocks


def _scan_throughput(directory: Path, frame: pd.DataFrame | None) -> list:
    """The scan-throughput table, or one line on how to produce scan_throughput.csv."""
    path = directory / bench.SCAN_THROUGHPUT
    if frame is None:
        return [
            Text(
                f"No scan throughput ({path}): run `python -m align_mamba.secrets.throughput "
                f"--checkpoint RUN/model.pt --out {path}`."
            )
        ]
    return [
        Text(
            "Scan throughput (`python -m align_mamba.secrets.throughput`): MiB/s (2^20 bytes) of whole scans, "
            "total bytes ÷ total seconds over the carrier kinds; baselines include their start-up. Findings: "
            "what each system reported (spans within 2 bytes counted as one), against the secrets planted."
        ),
        Table(bench.scan_throughput_table(frame)),
    ]


def _secret_spans(directory: Path, taggers: list[str] | None) -> tuple[Section, dict]:
    """Headline table, the tagger-vs-CredSweeper sentence, per-format recall and boundary accuracy, recall figures."""
    title = "Secret spans"
    results = secrets.load_secrets(directory, taggers)
    runs, breakdowns = results.runs, results.breakdowns
    notes = [Text(note) for note in results.notes]
    if runs.empty:
        return Section(title, tuple(notes)), {}
    blocks = [
        *notes,
        Text(
            "Span P / R / F1: predicted spans (merged) matched one-to-one to true spans at IoU ≥ 0.5; "
            "hit rate: true spans overlapped by any prediction; byte F1 over all bytes; false alarms: "
            "predictions overlapping no secret, per MB (10^6 bytes) of test_decoys; MB/s: bytes of "
            "the splits ÷ scan time (CredSweeper's includes its start-up)."
        ),
        Table(secrets.headline_table(runs)),
        Text(secrets.comparison_sentence(runs)),
    ]
    mismatched = secrets.mismatched_splits(runs)
    if mismatched:
        blocks.insert(
            0,
            Text(
                f"WARNING: systems were scored on different files in {', '.join(mismatched)}: "
                f"their numbers are not comparable.",
                loud=True,
            ),
        )
    if set(runs["split"]) & set(secrets.SCORED):
        blocks += [
            Text(
                "Span recall per format with its Wilson 95% interval; **held out** formats appear only in "
                "test_unseen, never in training."
            ),
            Table(secrets.per_format_table(breakdowns)),
        ]
        cases = secrets.per_case_table(breakdowns)
        if not cases.empty:
            blocks += [
                Text(
                    "Span recall by how the secret was written: `plain` as is, the hard cases split across "
                    "a string concatenation (`concat`), base64- or URL-encoded, a PEM key JSON-escaped, or "
                    "inside a long minified line, with Wilson 95% intervals."
                ),
                Table(cases),
            ]
        boundary = secrets.boundary_accuracy_table(results.boundary)
        if not boundary.empty:
            blocks += [
                Text(
                    "Boundary accuracy per format: for each true span, the prediction overlapping it most "
                    "(IoU, 0 when none overlaps); IoU median [quartiles] over the format's secrets, the share "
                    "with IoU ≥ 0.5 and ≥ 0.9, and the mean start / end offset errors in bytes of the "
                    "overlapped ones (a prefix cut by 4 bytes: start error 4)."
                ),
                Table(boundary),
            ]
        for breakdown, (name, axis) in secrets.FIGURES.items():
            png = figures.png_bytes(secrets.recall_figure(breakdowns, breakdown))
            blocks.append(
                Image(
                    name,
                    f"Span recall by {axis}, one line per system; bars are Wilson 95% "
                    f"intervals, dashed lines baselines.",
                    png,
                )
            )
    return Section(title, tuple(blocks)), secrets.secret_metrics(runs)


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}


def build_sections(
    runs: list[experiments.Run],
    recall: RecallParams | None,
    command: str,
    settings: ReportSettings,
    bench_dir: Path | None = None,
    secrets_dir: Path | None = None,
    taggers: list[str] | None = None,
    not_run: dict[str, list[str]] | None = None,
    skipped: dict[str, list[str]] | None = None,
    pending: dict[str, list[tuple[str, int, int, int]]] | None = None,
) -> tuple[list[Section], dict]:
    """The report's sections in order, and the headline metrics (rounded; None: no capacity).

    recall: the params' experiments and hypotheses (None: experiments as the cells record them).
    bench_dir / secrets_dir (None: that section is left out) add the benchmark and secret-span
    sections; a directory without results gives its section one line saying how to produce them.
    taggers: the tagger folders of secrets_dir to report (None: every one with a summary.json).
    not_run: per experiment, the ids of its cells that have no metrics file yet (a partial study).
    skipped: per experiment, the ids of its cells the lead-rate rule leaves out (recall.schedule).
    pending: per experiment, (architecture, num_pairs, d_state, seed) of each not_run cell and of
    each failure whose 2x rerun is due: the verdicts and capacities resting on them are provisional.
    """
    not_run, skipped, pending = not_run or {}, skipped or {}, pending or {}
    recorded = any(r.metrics.cell.experiments for r in runs)
    results = [
        experiments.ExperimentResult(exp, runs, settings, recorded, pending.get(exp.name, ()))
        for exp in experiments.experiments_of(runs, recall)
    ]
    header = _header(runs, results, command)
    missing = len({cell_id for ids in not_run.values() for cell_id in ids})  # a cell may be in two experiments
    if missing:
        warning = Text(
            f"A study under way: {missing} cell(s) of params.yaml have not run yet; every verdict below "
            f"rests only on the cells that have (each section says how many).",
            loud=True,
        )
        header = dataclasses.replace(header, blocks=(warning, *header.blocks))
    sections = [
        header,
        *(
            _experiment(result, runs, not_run.get(result.experiment.name, []), skipped.get(result.experiment.name, []))
            for result in results
        ),
        _provenance(runs),
    ]
    metrics: dict = {"cells": len(runs)}
    if missing:
        metrics["cells_not_run"] = missing
    if skipped:
        metrics["cells_skipped"] = len({cell_id for ids in skipped.values() for cell_id in ids})
    for result in results:
        metrics.update(result.headline())
    extras = [_benchmark(Path(bench_dir))] if bench_dir is not None else []
    extras += [_secret_spans(Path(secrets_dir), taggers)] if secrets_dir is not None else []
    for section, headline in extras:
        sections.append(section)
        metrics.update(_rounded(headline))
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
        return (
            f'<p class="warning">{_inline_html(block.body)}</p>' if block.loud else f"<p>{_inline_html(block.body)}</p>"
        )
    if isinstance(block, Table):
        return block.frame.to_html(index=False, border=0, na_rep="—")
    data = base64.b64encode(block.png).decode("ascii")
    caption = html.escape(block.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'
    )


def render_html(sections: list[Section]) -> str:
    """One self-contained page: inline CSS, tables from pandas, figures as data: URIs."""
    body = [f"<h1>{html.escape(TITLE)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [_html_block(block) for block in section.blocks]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>'
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _listing(ids: dict[str, list[str]]) -> str:
    """One `experiment<TAB>cell id` line per cell, experiments in name order."""
    return "".join(f"{name}\t{cell_id}\n" for name, cells in sorted(ids.items()) for cell_id in cells)


def _present(cells_dir: Path, recall: RecallParams) -> list[Path]:
    """The metrics files of `recall`'s cells that exist under `cells_dir`."""
    return [path for cell in recall.cells if (path := Path(cells_dir) / f"{cell.id}.json").is_file()]


def _grid_place(cell: Cell) -> tuple[str, int, int, int]:
    """(architecture, num_pairs, d_state, seed): where a cell still to run leaves a result open."""
    return cell.architecture, cell.num_pairs, cell.model.d_state, cell.train.seed


def write_report(
    cells_dir: Path,
    out_dir: Path,
    threshold: float | None = None,
    command: str | None = None,
    recall: RecallParams | None = None,
    bench_dir: Path | None = None,
    secrets_dir: Path | None = None,
    taggers: list[str] | None = None,
    partial: bool = False,
) -> dict:
    """Load the metrics files under `cells_dir` (exactly the cells of `recall`, if given) and write the
    report, with the benchmark and secret-span sections when `bench_dir` / `secrets_dir` are given.

    threshold: the capacity threshold (default: recall's report settings, else 0.9).
    partial: with `recall`, a study still under way: cells without a metrics file are listed as not
    run (each experiment's section says how many; not_run.txt names them), never filled in.
    Writes report.md, report.html, figures/*.png, cells.csv and metrics.json; returns the metrics.
    """
    settings = recall.report if recall is not None else ReportSettings()
    if threshold is not None:
        if not 0 < threshold <= 1:
            raise ConfigError(f"--capacity-threshold must be in (0, 1], got {threshold}")
        settings = dataclasses.replace(settings, capacity_threshold=threshold)
    out_dir = Path(out_dir)
    params = f"--params {recall.source} " if recall is not None else ""
    extra = "".join(
        f" --{flag} {value}" for flag, value in (("bench", bench_dir), ("secrets", secrets_dir)) if value is not None
    )
    extra += " --partial" if partial else ""
    command = command or f"python -m align_mamba.report {params}--cells {cells_dir} --out {out_dir}{extra}"
    runs = experiments.load_runs(cells_dir, _present(cells_dir, recall) if recall is not None else None)
    not_run: dict[str, list[str]] = {}
    skipped: dict[str, list[str]] = {}
    pending: dict[str, list[tuple[str, int, int, int]]] = {}
    if recall is not None:
        validation, confirmed, reruns = schedule.what_ran(runs)
        plan = schedule.plan(recall, validation, confirmed, reruns=reruns)
        unneeded = set(plan.skipped)
        missing = [cell for cell in recall.cells if cell.id not in validation]
        if not partial and any(cell.id not in unneeded for cell in missing):
            first = next(cell for cell in missing if cell.id not in unneeded)
            raise ConfigError(
                f"{sum(cell.id not in unneeded for cell in missing)} metrics file(s) of the experiments are "
                f"missing, e.g. {Path(cells_dir) / first.id}.json (--partial reports a study under way)"
            )
        for cell in missing:
            for name in cell.experiments:
                (skipped if cell.id in unneeded else not_run).setdefault(name, []).append(cell.id)
                if cell.id not in unneeded:
                    pending.setdefault(name, []).append(_grid_place(cell))
        # a failure whose 2x rerun is due and not yet run is not a failure yet either
        for job in plan.ready:
            if job.endswith(CONFIRM_ID_SUFFIX):
                cell = recall.cell(job.removesuffix(CONFIRM_ID_SUFFIX))
                for name in cell.experiments:
                    if recall.experiment(name).confirm != "none":
                        pending.setdefault(name, []).append(_grid_place(cell))
    sections, metrics = build_sections(
        runs, recall, command, settings, bench_dir, secrets_dir, taggers, not_run, skipped, pending
    )
    if partial:
        atomic_write_text(out_dir / "not_run.txt", _listing(not_run))
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", _listing(skipped))
    else:
        (out_dir / "skipped.txt").unlink(missing_ok=True)  # an earlier report's, of cells since run
    for block in (b for s in sections for b in s.blocks if isinstance(b, Image)):
        atomic_write_bytes(out_dir / "figures" / f"{block.name}.png", block.png)
    atomic_write_text(out_dir / "cells.csv", cells_frame(runs, settings.capacity_threshold).to_csv(index=False))
    atomic_write_json(out_dir / "metrics.json", null_non_finite(metrics))  # a metric no cell measured is null
    atomic_write_text(out_dir / "report.md", render_markdown(sections))
    atomic_write_text(out_dir / "report.html", render_html(sections))
    return metrics
