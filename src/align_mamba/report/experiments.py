"""The recall study's report, one section per experiment, from typed cell metrics.

A *run* is one cell (one learning rate, one seed) with its 2x-budget rerun if one was made. Per
(architecture, num_pairs, d_state, seed, suffix) the learning rate best on validation is kept; a
kept seed has learned when its test accuracy reaches the capacity threshold, at its own budget or
at twice it (a failure counts only if the rerun failed too). Sections open with the experiment's
hypothesis table, then every grid point with successes/seeds and their Wilson interval.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from align_mamba.core.errors import ConfigError
from align_mamba.recall.metrics import CellMetrics, Confirm, read_json
from align_mamba.recall.params import (
    CONFIRM_FILE_SUFFIX,
    Expectation,
    Experiment,
    RecallParams,
    ReportSettings,
)
from align_mamba.report import stats
from align_mamba.report.figures import architecture_styles, log2_axis, panels

# A mean of 0.85 and 0.95 is 0.8999999999999999 in floating point; it reaches a 0.9 threshold.
SLACK = 1e-9


@dataclass(frozen=True)
class Run:
    """One cell's metrics and, for a failed cell, its 2x-budget rerun (None: no confirm file)."""

    metrics: CellMetrics
    confirm: Confirm | None = None

    @property
    def rerun(self) -> CellMetrics | None:
        return self.confirm.metrics if self.confirm is not None and self.confirm.needed else None

    @property
    def final(self) -> CellMetrics:
        """The run that decides the seed: the rerun when there was one."""
        return self.rerun or self.metrics

    def learned(self, threshold: float) -> bool:
        return self.final.accuracy >= threshold - SLACK

    def learned_at_1x(self, threshold: float) -> bool:
        """Learned in the first run, at the step budget (a 2× rerun not counted)."""
        return self.metrics.accuracy >= threshold - SLACK

    def outcome(self, threshold: float) -> str:
        m = self.metrics
        if self.learned_at_1x(threshold):
            return "learned"
        if self.rerun is not None:
            if self.learned(threshold):
                return "learned at 2× budget"
            return f"failed at 1× and 2× ({stats.failure_kind(self.rerun.final_train_loss, self.rerun.chance_loss, self.rerun.accuracy)})"
        kind = stats.failure_kind(m.final_train_loss, m.chance_loss, m.accuracy)
        if self.confirm is not None:
            return f"failed ({kind}; no 2× rerun: {self.confirm.reason or 'not needed'})"
        return f"failed ({kind}; 2× rerun not run)"


def series(m: CellMetrics) -> str:
    """The line a cell belongs to: its architecture, with the experiment's override hash if any."""
    return m.architecture + m.suffix


def _is_metrics(data) -> bool:
    return isinstance(data, dict) and ("schema_version" in data or {"cell", "slices"} <= data.keys())


def load_runs(cells_dir: Path, expected: list[Path] | None = None) -> list[Run]:
    """The metrics files under `cells_dir` (exactly `expected` when given), each with its
    STEM.confirm.json beside it if present. Other JSON files are skipped; none found is an error."""
    cells_dir = Path(cells_dir)
    if not cells_dir.is_dir():
        raise ConfigError(f"--cells directory not found: {cells_dir}")
    if expected is not None:
        missing = [str(p) for p in expected if not p.is_file()]
        if missing:
            raise ConfigError(f"{len(missing)} metrics file(s) of the experiments are missing, e.g. {missing[0]}")
        paths = sorted(expected)
    else:
        paths = sorted(p for p in cells_dir.rglob("*.json") if not p.name.endswith(CONFIRM_FILE_SUFFIX))
    runs, seen = [], {}
    for path in paths:
        data = read_json(path)
        if not _is_metrics(data):
            continue
        metrics = CellMetrics.from_json(data, str(path))
        if metrics.cell.id in seen:
            raise ConfigError(f"two metrics files for cell {metrics.cell.id}: {seen[metrics.cell.id]}, {path}")
        seen[metrics.cell.id] = path
        confirm_path = path.with_name(path.name[: -len(".json")] + CONFIRM_FILE_SUFFIX)
        confirm = Confirm.from_json(read_json(confirm_path), str(confirm_path)) if confirm_path.is_file() else None
        runs.append(Run(metrics, confirm))
    if not runs:
        raise ConfigError(f"no metrics files under {cells_dir} (written by python -m align_mamba.recall.evaluate)")
    return runs


def experiments_of(runs: list[Run], recall: RecallParams | None) -> list[Experiment]:
    """The params' experiments, or (no params) one per experiment name the cells record, without hypotheses."""
    if recall is not None:
        return list(recall.experiments)
    names = sorted({name for run in runs for name in run.metrics.cell.experiments} or {"cells"})
    out = []
    for name in names:
        mine = [r.metrics for r in runs if name in r.metrics.cell.experiments or name == "cells"]
        out.append(
            Experiment(
                name=name,
                architectures=tuple(sorted({m.architecture for m in mine})),
                num_pairs=tuple(sorted({m.num_pairs for m in mine})),
                d_state=tuple(sorted({m.d_state for m in mine})),
                seeds=tuple(sorted({m.seed for m in mine})),
                lrs=tuple(sorted({m.lr for m in mine})),
            )
        )
    return out


@dataclass(frozen=True)
class RateRuns:
    """The runs (one per seed) at one learning rate of a grid point's sweep."""

    lr: float
    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Sweep:
    """One grid point's learning-rate sweep: every run, grouped by rate in ascending order."""

    series: str
    num_pairs: int
    d_state: int
    rates: tuple[RateRuns, ...]

    @classmethod
    def of(cls, series_name: str, num_pairs: int, d_state: int, runs: list[Run]) -> "Sweep":
        lrs = sorted({r.metrics.lr for r in runs})
        by_rate = tuple(
            RateRuns(lr, tuple(sorted((r for r in runs if r.metrics.lr == lr), key=lambda r: r.metrics.seed)))
            for lr in lrs
        )
        return cls(series_name, num_pairs, d_state, by_rate)

    def at(self, lr: float) -> tuple[Run, ...]:
        return next((rate.runs for rate in self.rates if rate.lr == lr), ())


@dataclass(frozen=True)
class Point:
    """One grid point of an experiment: its kept seeds (one run each) and the rate sweep they came from."""

    kept: tuple[Run, ...]
    sweep: Sweep

    @property
    def series(self) -> str:
        return self.sweep.series

    @property
    def num_pairs(self) -> int:
        return self.sweep.num_pairs

    @property
    def d_state(self) -> int:
        return self.sweep.d_state

    @property
    def compared(self) -> int:
        """How many learning rates competed for each seed."""
        return len(self.sweep.rates)

    def accuracies(self) -> list[float]:
        return [run.final.accuracy for run in self.kept]


class ExperimentResult:
    """An experiment's runs reduced to grid points, capacities and hypothesis rows."""

    def __init__(
        self,
        experiment: Experiment,
        runs: list[Run],
        settings: ReportSettings,
        recorded: bool,
        pending: Iterable[tuple[str, int, int, int]] = (),
    ):
        """pending: (architecture, num_pairs, d_state, seed) of each of this experiment's cells still
        to run (a study under way); a verdict or a capacity resting on them is marked provisional."""
        self.experiment, self.settings = experiment, settings
        self.pending = frozenset(pending)
        self.threshold = settings.capacity_threshold
        mine = [r for r in runs if not recorded or experiment.name in r.metrics.cell.experiments]
        kept = stats.select_on_validation(
            mine,
            key=lambda r: (
                r.metrics.architecture,
                r.metrics.num_pairs,
                r.metrics.d_state,
                r.metrics.seed,
                r.metrics.suffix,
            ),
            # a seed's rate is chosen on its deciding runs: a 2x rerun stands in for its cell
            validation=lambda r: r.final.val_accuracy,
            rate=lambda r: r.metrics.lr,
        )

        def where(r: Run) -> tuple[str, int, int]:
            return series(r.metrics), r.metrics.num_pairs, r.metrics.d_state

        swept, grouped = defaultdict(list), defaultdict(list)
        for r in mine:
            swept[where(r)].append(r)
        for r in kept:
            grouped[where(r)].append(r)
        # every run of each grid point's rate sweep, the kept ones and the rest
        self.sweeps = [Sweep.of(s, n, d, rs) for (s, n, d), rs in sorted(swept.items())]
        sweep_at = {(w.series, w.num_pairs, w.d_state): w for w in self.sweeps}
        self.points = [
            Point(tuple(sorted(rs, key=lambda r: r.metrics.seed)), sweep_at[at]) for at, rs in sorted(grouped.items())
        ]
        # the params' order of architectures (hybrid-0, hybrid-1, hybrid-2, ..., not hybrid-0, hybrid-16)
        order = {name: i for i, name in enumerate(experiment.architectures)}
        arch_of = {series(r.metrics): r.metrics.architecture for r in mine}
        self.series = sorted({p.series for p in self.points}, key=lambda s: (order.get(arch_of[s], len(order)), s))
        # shown without the override hash where an architecture has one series in this experiment
        count = Counter(arch_of[s] for s in self.series)
        self.labels = {s: arch_of[s] if count[arch_of[s]] == 1 else s for s in self.series}
        self.architecture_of = arch_of
        self.d_states = sorted({p.d_state for p in self.points})

    def point(self, series_name: str, num_pairs: int, d_state: int) -> Point | None:
        return next(
            (p for p in self.points if (p.series, p.num_pairs, p.d_state) == (series_name, num_pairs, d_state)), None
        )

    def capacities(self, series_name: str, d_state: int) -> tuple[dict[int, int | None], int]:
        """Per seed: the largest num_pairs it learned (None: none); and the largest num_pairs tested."""
        points = [p for p in self.points if p.series == series_name and p.d_state == d_state]
        by_seed: dict[int, dict[int, float]] = defaultdict(dict)
        for p in points:
            for run in p.kept:
                by_seed[run.metrics.seed][p.num_pairs] = 1.0 if run.learned(self.threshold) else 0.0
        largest = max((p.num_pairs for p in points), default=0)
        return {seed: stats.capacity(acc, 0.5) for seed, acc in sorted(by_seed.items())}, largest

    def capacity_estimate(self, series_name: str, d_state: int) -> stats.Estimate:
        caps, largest = self.capacities(series_name, d_state)
        return stats.capacity_estimate(
            list(caps.values()), largest, self.settings.bootstrap_samples, self.settings.confidence, seed=d_state
        )

    def hypothesis_rows(self) -> list[dict]:
        """One row per expectation (per d_state for capacity_ratio): claim, expected, measured, verdict."""
        rows = []
        for i, h in enumerate(self.experiment.expect):
            rows += self._rows(h, i)
        return rows

    def series_of(self, architecture: str) -> str:
        """The series an expectation's architecture runs as here: its name plus the experiment's
        override hash (one per architecture within an experiment), or the bare name if none ran."""
        named = {p.series for p in self.points for r in p.kept if r.metrics.architecture == architecture}
        return named.pop() if len(named) == 1 else architecture

    def _rows(self, h: Expectation, index: int) -> list[dict]:
        s = cfg = self.settings
        arch = self.series_of(h.architecture)
        claim = (
            h.claim
            or {
                "accuracy": f"{h.architecture} accuracy at num_pairs {h.num_pairs}, d_state {h.d_state}",
                "capacity_ratio": f"{h.architecture} capacity / d_state",
                "capacity_slope": f"{h.architecture} capacity ∝ d_state^slope",
            }[h.kind]
        )
        base = {
            "index": index,
            "kind": h.kind,
            "architecture": h.architecture,
            "claim": claim,
            "expected": f"[{h.low:g}, {h.high:g}]",
        }
        if h.kind == "accuracy":
            point = self.point(arch, h.num_pairs, h.d_state)
            values = point.accuracies() if point else []
            est = stats.bootstrap_mean(values, s.bootstrap_samples, cfg.confidence, seed=index)
            learned = sum(r.learned(self.threshold) for r in point.kept) if point else 0
            extra = f"; {learned}/{len(values)} seeds learned" if values else ""
            return [
                {
                    **base,
                    "where": f"num_pairs {h.num_pairs}, d_state {h.d_state}",
                    "estimate": est,
                    "measured": (est.text() + extra) if values else "not run",
                    "verdict": stats.provisional(
                        stats.verdict(est, h.low, h.high), self.point_pending(h.architecture, h.num_pairs, h.d_state)
                    ),
                }
            ]
        if h.kind == "capacity_ratio":
            rows = []
            for d_state in self.d_states:
                est = self.capacity_estimate(arch, d_state).scaled(1 / d_state)
                caps, _ = self.capacities(arch, d_state)
                if not caps:
                    continue
                rows.append(
                    {
                        **base,
                        "where": f"d_state {d_state}",
                        "estimate": est,
                        "measured": est.text() if est.value is not None else "no capacity (0)",
                        # no seed with a capacity: the ratio is 0 at every resample
                        "verdict": stats.provisional(
                            stats.verdict(
                                est if est.value is not None else stats.Estimate(0.0, 0.0, 0.0, est.n), h.low, h.high
                            ),
                            self.capacity_pending(h.architecture, d_state),
                        ),
                    }
                )
            return rows or [
                {
                    **base,
                    "where": "—",
                    "estimate": stats.Estimate(None, None, None, 0),
                    "measured": "not run",
                    "verdict": "inconclusive",
                }
            ]
        caps = {d: list(self.capacities(arch, d)[0].values()) for d in self.d_states}
        caps = {d: c for d, c in caps.items() if c}
        largest = max((p.num_pairs for p in self.points if p.series == arch), default=0)
        est = stats.slope_estimate(caps, largest, s.bootstrap_samples, cfg.confidence, seed=index)
        measured = (
            "no slope (fewer than 2 d_state with a capacity)"
            if est.value is None
            else f"{est.value:.3f} (no interval: a capacity reached the largest num_pairs tested)"
            if est.low is None
            else est.text()
        )
        return [
            {
                **base,
                "where": "d_state " + ", ".join(str(d) for d in caps),
                "estimate": est,
                "measured": measured,
                "verdict": stats.provisional(stats.verdict(est, h.low, h.high), self.capacity_pending(h.architecture)),
            }
        ]

    def point_pending(self, architecture: str, num_pairs: int, d_state: int) -> bool:
        """Whether cells of `architecture` at this grid point are still to run."""
        return any(a == architecture and p == num_pairs and d == d_state for a, p, d, _ in self.pending)

    def capacity_pending(self, architecture: str, d_state: int | None = None, seed: int | None = None) -> bool:
        """Whether a capacity can still change: a cell still to run above the capacity of its seed
        (a capacity is the largest num_pairs learned, so cells below it cannot move it), at d_state
        and seed (None: any)."""
        series_name = self.series_of(architecture)
        capacities = {d: self.capacities(series_name, d)[0] for d in self.d_states}
        return any(
            num_pairs > (capacities.get(d, {}).get(s) or 0)
            for a, num_pairs, d, s in self.pending
            if a == architecture and d_state in (None, d) and seed in (None, s)
        )

    def verdict_lines(self) -> list[str]:
        """One line per expectation: its claim, measured value and verdict (the report's first lines)."""
        by_index = defaultdict(list)
        for row in self.hypothesis_rows():
            by_index[row["index"]].append(row)
        lines = []
        for index, rows in by_index.items():
            overall = stats.combine_verdicts(r["verdict"] for r in rows)
            measured = "; ".join(f"{r['where']}: {r['measured']}" for r in rows)
            lines.append(
                f"{self.experiment.name}: {rows[0]['claim']} — expected {rows[0]['expected']}, measured "
                f"{measured} → **{overall}**"
            )
        if not lines:
            caps = ", ".join(
                f"{s} d_state {d}: {self.capacity_estimate(s, d).text(1)}"
                for s in self.series
                for d in self.d_states
                if self.point_exists(s, d)
            )
            lines.append(f"{self.experiment.name}: no hypothesis stated; mean capacity {caps}")
        return lines

    def label(self, series_name: str) -> str:
        """How tables and figures name a series: the architecture, or the series where it is ambiguous."""
        return self.labels.get(series_name, series_name)

    def point_exists(self, series_name: str, d_state: int) -> bool:
        return any(p.series == series_name and p.d_state == d_state for p in self.points)

    def headline(self) -> dict[str, object]:
        """Rounded headline numbers for metrics.json: accuracies, capacities (None: no capacity), verdicts."""
        name, out = self.experiment.name, {}
        for p in self.points:
            out[f"{name}.accuracy.{p.series}.np{p.num_pairs}.ds{p.d_state}"] = round(float(np.mean(p.accuracies())), 3)
        for s in self.series:
            for d in self.d_states:
                if self.point_exists(s, d):
                    value = self.capacity_estimate(s, d).value
                    out[f"{name}.capacity.{s}.ds{d}"] = None if value is None else round(value, 3)
        for row in self.hypothesis_rows():
            where = row["where"].replace("num_pairs ", "np").replace("d_state ", "ds").replace(", ", ".")
            key = f"{name}.verdict.{row['kind']}.{row['architecture']}" + (
                f".{where}" if row["kind"] != "capacity_slope" else ""
            )
            out[key] = row["verdict"]
            if row["estimate"].value is not None:
                out[key.replace(".verdict.", ".measured.")] = round(float(row["estimate"].value), 3)
        return out


# --- tables ------------------------------------------------------------------------------------


def hypothesis_table(result: ExperimentResult) -> pd.DataFrame:
    rows = result.hypothesis_rows()
    return pd.DataFrame(
        {
            "hypothesis": [r["claim"] for r in rows],
            "where": [r["where"] for r in rows],
            "expected": [r["expected"] for r in rows],
            f"measured [{result.settings.confidence:.0%} interval]": [r["measured"] for r in rows],
            "verdict": [r["verdict"] for r in rows],
        }
    )


def _median_steps(runs: list[Run], threshold: float) -> str:
    steps = [r.final.steps_to_learn(threshold) for r in runs]
    reached = [s for s in steps if s is not None]
    if not reached:
        return "—"
    return f"{statistics.median(reached):g}" + (
        f" ({len(reached)}/{len(steps)} seeds)" if len(reached) < len(steps) else ""
    )


def rate_table(result: ExperimentResult) -> pd.DataFrame:
    """Every rate of each grid point's sweep at 1× budget: seeds learned / seeds run and their mean
    test accuracy, one column per rate (the window of rates a layout trains in). Empty when no
    point ran more than one rate."""
    t = result.threshold
    if all(len(sweep.rates) < 2 for sweep in result.sweeps):
        return pd.DataFrame()
    lrs = sorted({rate.lr for sweep in result.sweeps for rate in sweep.rates})
    rows = []
    rank = {s: i for i, s in enumerate(result.series)}
    for sweep in sorted(result.sweeps, key=lambda w: (rank.get(w.series, len(rank)), w.d_state, w.num_pairs)):
        row = {"architecture": result.label(sweep.series), "d_state": sweep.d_state, "num_pairs": sweep.num_pairs}
        for lr in lrs:
            runs = sweep.at(lr)
            learned = sum(r.learned_at_1x(t) for r in runs)
            mean = np.mean([r.metrics.accuracy for r in runs]) if runs else 0.0
            row[f"lr {lr:g}"] = f"{learned}/{len(runs)} ({mean:.2f})" if runs else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _edge(point: Point, lr: float) -> str:
    """The marker of a kept rate at an end of a sweep of 3 or more rates run, else "": the best rate
    may lie beyond that end, so the sweep is not yet known to hold it."""
    rates = [rate.lr for rate in point.sweep.rates]
    if len(rates) < 3:
        return ""
    return " (highest run)" if lr == rates[-1] else " (lowest run)" if lr == rates[0] else ""


def points_table(result: ExperimentResult) -> pd.DataFrame:
    """Every grid point: successes/seeds with the Wilson interval beside the mean accuracy."""
    t, conf = result.threshold, result.settings.confidence
    rows = []
    for p in sorted(result.points, key=lambda p: (result.series.index(p.series), p.d_state, p.num_pairs)):
        k, n = sum(r.learned(t) for r in p.kept), len(p.kept)
        low, high = stats.wilson(k, n, conf)
        first = [r.metrics.accuracy for r in p.kept]
        reruns = [f"s{r.metrics.seed}: {r.rerun.accuracy:.3f}" for r in p.kept if r.rerun is not None]
        failed = [f"s{r.metrics.seed} {r.outcome(t)}" for r in p.kept if not r.outcome(t).startswith("learned")]
        kept_lrs = pd.Series([r.metrics.lr for r in p.kept]).value_counts().sort_index()
        rows.append(
            {
                "architecture": result.label(p.series),
                "d_state": p.d_state,
                "num_pairs": p.num_pairs,
                "state (floats)": p.kept[0].metrics.state_size.total,
                f"learned (≥ {t:g}) / seeds": f"{k}/{n}",
                f"Wilson {conf:.0%}": f"[{low:.2f}, {high:.2f}]",
                "accuracy: mean (per seed)": f"{np.mean(first):.3f} (" + ", ".join(f"{a:.2f}" for a in first) + ")",
                "2× budget rerun": ", ".join(reruns) or "—",
                "lr kept on validation": ", ".join(f"{lr:g} ×{c}{_edge(p, lr)}" for lr, c in kept_lrs.items())
                + f" ({p.compared} {'rate' if p.compared == 1 else 'rates'} run)",
                "steps to learn (median)": _median_steps(list(p.kept), t),
                "failed seeds": "; ".join(failed) or "—",
            }
        )
    return pd.DataFrame(rows)


def capacity_table(result: ExperimentResult) -> pd.DataFrame:
    rows = []
    for s in result.series:
        for d in result.d_states:
            if not result.point_exists(s, d):
                continue
            caps, largest = result.capacities(s, d)
            est = result.capacity_estimate(s, d)
            rows.append(
                {
                    "architecture": result.label(s),
                    "d_state": d,
                    "capacity per seed": ", ".join(
                        f"s{seed}: {'none' if c is None else c}{'*' if result.capacity_pending(result.architecture_of[s], d, seed) else ''}"
                        for seed, c in caps.items()
                    ),
                    f"mean capacity [{result.settings.confidence:.0%} bootstrap]": est.text(1),
                    "largest num_pairs tested": largest,
                }
            )
    return pd.DataFrame(rows)


# --- figures -----------------------------------------------------------------------------------


def cliff_figure(result: ExperimentResult) -> Figure:
    """Accuracy vs num_pairs, one panel per d_state, a line per architecture (mean) over its seeds (dots)."""
    styles = architecture_styles(result.series)
    fig, axes = panels(len(result.d_states))
    for ax, d_state in zip(axes, result.d_states):
        for s in result.series:
            line = sorted(
                (p for p in result.points if p.series == s and p.d_state == d_state), key=lambda p: p.num_pairs
            )
            if not line:
                continue
            x = [p.num_pairs for p in line]
            ax.plot(x, [np.mean(p.accuracies()) for p in line], label=result.label(s), **styles[s])
            for p in line:
                ax.scatter([p.num_pairs] * len(p.kept), p.accuracies(), s=12, alpha=0.4, color=styles[s]["color"])
        ax.axhline(result.threshold, color="grey", linestyle=":", linewidth=1)
        log2_axis(ax, [p.num_pairs for p in result.points])
        ax.set(ylim=(-0.02, 1.02), title=f"d_state = {d_state}", xlabel="num_pairs (log2)", ylabel="test accuracy")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", loc="best")
    return fig


def capacity_figure(result: ExperimentResult) -> Figure | None:
    """Mean capacity vs state size in floats (log-log) with a fitted slope per architecture; None
    when no architecture has a capacity."""
    styles = architecture_styles(result.series)
    fig, (ax,) = panels(1)
    drawn = False
    for s in result.series:
        xs, ys, lows, highs = [], [], [], []
        for d in result.d_states:
            if not result.point_exists(s, d):
                continue
            est = result.capacity_estimate(s, d)
            if est.value is None:
                continue
            at = [p for p in result.points if p.series == s and p.d_state == d and p.num_pairs <= est.value]
            point = max(at or [p for p in result.points if p.series == s and p.d_state == d], key=lambda p: p.num_pairs)
            xs.append(point.kept[0].metrics.state_size.total)
            ys.append(est.value)
            lows.append(est.value - (est.low or est.value))
            highs.append((est.high or est.value) - est.value)
        if not xs:
            continue
        label = result.label(s) + (f" (slope {stats.loglog_slope(xs, ys):.2f})" if len(set(xs)) >= 2 else "")
        ax.errorbar(xs, ys, yerr=[lows, highs], capsize=3, label=label, **styles[s])
        drawn = True
    if not drawn:
        return None
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.set(xlabel="state size (floats, log)", ylabel=f"mean capacity (num_pairs ≥ {result.threshold:g}, log2)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="best")
    return fig


def single_position_series(result: ExperimentResult, runs_by_series: dict[str, CellMetrics]) -> dict[int, str]:
    """k → series for hybrids with one cross-attention layer that differ only in where it sits
    (empty unless at least two such architectures share every other setting)."""
    found: dict[int, str] = {}
    reference = None
    for s, m in sorted(runs_by_series.items()):
        model = m.cell.model
        if model.variant != "hybrid" or len(model.hybrid_positions) != 1:
            continue
        rest = {k: v for k, v in vars(model).items() if k not in ("hybrid_positions", "name", "d_state")}
        if reference is None:
            reference = rest
        if rest == reference:
            found[model.hybrid_positions[0]] = s
    return dict(sorted(found.items())) if len(found) >= 2 else {}


def position_figure(result: ExperimentResult, by_k: dict[int, str]) -> Figure:
    """Accuracy and steps-to-learn against the cross-attention layer k, a line per (num_pairs, d_state),
    and the share of seeds that learned at each rate of the sweep (1× budget), a line per rate."""
    fig, (acc_ax, steps_ax, rate_ax) = panels(3, max_cols=3)
    grid = sorted({(p.num_pairs, p.d_state) for p in result.points if p.series in by_k.values()})
    for i, (num_pairs, d_state) in enumerate(grid):
        ks, acc, steps_k, steps = [], [], [], []
        for k, s in by_k.items():
            p = result.point(s, num_pairs, d_state)
            if p is None:
                continue
            ks.append(k)
            acc.append(np.mean(p.accuracies()))
            reached = [r.final.steps_to_learn(result.threshold) for r in p.kept]
            reached = [x for x in reached if x is not None]
            if reached:
                steps_k.append(k)
                steps.append(statistics.median(reached))
        label = f"np{num_pairs}, ds{d_state}"
        acc_ax.plot(ks, acc, marker="o", label=label)
        steps_ax.plot(steps_k, steps, marker="o", label=label)
    _rate_lines(rate_ax, result, by_k, several=len(grid) > 1)
    acc_ax.set(xlabel="cross-attention layer k", ylabel="test accuracy (mean over seeds)", ylim=(-0.02, 1.02))
    steps_ax.set(
        xlabel="cross-attention layer k", ylabel=f"steps to validation accuracy ≥ {result.threshold:g} (median)"
    )
    rate_ax.set(xlabel="cross-attention layer k", ylabel="seeds learned at this rate (1× budget)", ylim=(-0.08, 1.15))
    for ax in (acc_ax, steps_ax, rate_ax):
        ax.set_xticks(list(by_k))
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize="small", loc="best")
    rate_ax.legend(fontsize="small", loc="best")
    return fig


def _rate_lines(ax, result: ExperimentResult, by_k: dict[int, str], several: bool) -> None:
    """Per (rate, num_pairs, d_state): the share of runs at test accuracy ≥ threshold against k,
    each point labelled learned/run."""
    series_k = {s: k for k, s in by_k.items()}
    runs = defaultdict(list)  # (lr, num_pairs, d_state) -> [(k, learned)]
    for sweep in result.sweeps:
        if sweep.series in series_k:
            for rate in sweep.rates:
                runs[(rate.lr, sweep.num_pairs, sweep.d_state)] += [
                    (series_k[sweep.series], r.learned_at_1x(result.threshold)) for r in rate.runs
                ]
    for (lr, num_pairs, d_state), pairs in sorted(runs.items()):
        ks = sorted({k for k, _ in pairs})
        learned = [sum(ok for kk, ok in pairs if kk == k) for k in ks]
        counts = [sum(1 for kk, _ in pairs if kk == k) for k in ks]
        label = f"lr {lr:g}" + (f", np{num_pairs} ds{d_state}" if several else "")
        (line,) = ax.plot(ks, [a / n for a, n in zip(learned, counts)], marker="o", label=label)
        for k, a, n in zip(ks, learned, counts):
            ax.annotate(
                f"{a}/{n}", (k, a / n), textcoords="offset points", xytext=(3, 4), fontsize=7, color=line.get_color()
            )
