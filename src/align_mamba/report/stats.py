"""Statistics for bimodal outcomes: a seed learns the task or it does not.

Successes over seeds get a Wilson interval (exact enough at n = 2..10, never outside [0, 1]); a
capacity (the largest num_pairs a seed passes) gets a percentile bootstrap over seeds; capacity
against d_state gets a log-log slope with a bootstrap interval. A hypothesis is judged by where
the measured interval lies against its expected range (VERDICT_RULE). Selection among learning
rates uses validation accuracy only; the test split never chooses anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TypeVar

import numpy as np

T = TypeVar("T")

VERDICT_RULE = (
    "**supported**: the whole measured interval lies inside the expected range; **refuted**: the "
    "interval lies entirely outside it; **inconclusive**: the two overlap in part, or fewer than "
    "{min_seeds} seeds measured it, or the interval is unbounded on the side that decides. A verdict "
    "marked **(provisional)** rests on grid points with cells still to run (a study under way), or on "
    "failures whose 2× rerun is due: what those runs show can change it."
)
PROVISIONAL = " (provisional)"
MIN_SEEDS = 2
# A final training loss within this fraction of ln(#values) is the chance plateau.
PLATEAU_TOLERANCE = 0.05
# A failure recalls "partially" only from this accuracy up: below it, a loss that left the plateau
# bought no recall (e.g. the model learned which values occur, not which key holds which).
PARTIAL_RECALL_MIN = 0.05


def z_value(confidence: float) -> float:
    """The two-sided normal quantile: 1.96 at 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of successes/total; (0, 1) when total is 0."""
    if total == 0:
        return 0.0, 1.0
    z, p = z_value(confidence), successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def capacity(accuracy_by_num_pairs: Mapping[int, float], threshold: float) -> int | None:
    """The largest num_pairs whose accuracy reaches `threshold`; None when none does."""
    passing = [n for n, acc in accuracy_by_num_pairs.items() if acc >= threshold]
    return max(passing) if passing else None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval; low/high None when it cannot be measured. `upper_open`:
    the true value may exceed `high` (a capacity still passing at the largest num_pairs tested)."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    upper_open: bool = False

    def scaled(self, factor: float) -> Estimate:
        def times(x):
            return None if x is None else x * factor

        return Estimate(times(self.value), times(self.low), times(self.high), self.n, self.upper_open)

    def text(self, digits: int = 3) -> str:
        if self.value is None:
            return "none"
        point = f"{self.value:.{digits}f}"
        if self.low is None:
            return f"{point} (n={self.n})"
        high = "∞" if self.upper_open else f"{self.high:.{digits}f}"
        return f"{point} [{self.low:.{digits}f}, {high}]"


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], samples: int, confidence: float, seed: int = 0) -> Estimate:
    """Mean of `values` with a percentile bootstrap interval (resampling the values with replacement)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Estimate(None, None, None, 0)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    low, high = _percentiles(means, confidence)
    return Estimate(float(data.mean()), low, high, int(data.size))


def capacity_estimate(
    capacities: Sequence[int | None], largest_tested: int, samples: int, confidence: float, seed: int = 0
) -> Estimate:
    """Mean capacity over seeds (a seed with no capacity counts 0) with a bootstrap interval.

    value None when no seed has a capacity. A seed passing the largest num_pairs tested has a
    capacity of at least that; the interval's upper end is then open.
    """
    values = [0 if c is None else c for c in capacities]
    estimate = bootstrap_mean(values, samples, confidence, seed)
    open_top = any(c is not None and c >= largest_tested for c in capacities)
    if estimate.value is not None and estimate.value == 0:
        return Estimate(None, estimate.low, estimate.high, estimate.n)
    return Estimate(estimate.value, estimate.low, estimate.high, estimate.n, open_top)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y on log x (the exponent b of y = a·x^b)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    lx_centred = lx - lx.mean()
    return float((lx_centred * (ly - ly.mean())).sum() / (lx_centred**2).sum())


def slope_estimate(
    capacities: Mapping[int, Sequence[int | None]], largest_tested: int, samples: int, confidence: float, seed: int = 0
) -> Estimate:
    """Log-log slope of mean capacity against d_state, with a bootstrap interval.

    `capacities`: d_state → per-seed capacities. Each bootstrap draw resamples the seeds of every
    d_state independently; draws in which some d_state has mean capacity 0 have no slope and are
    dropped (if more than the two tails' share would go, the interval is not measured). A capacity
    at the largest num_pairs tested is a lower bound, so any such seed leaves the interval unmeasured.
    """
    d_states = sorted(capacities)
    n = min((len(capacities[d]) for d in d_states), default=0)
    values = [np.asarray([0 if c is None else c for c in capacities[d]], dtype=float) for d in d_states]
    if len(d_states) < 2 or any(v.size == 0 for v in values) or any(v.mean() <= 0 for v in values):
        return Estimate(None, None, None, n)
    point = loglog_slope(d_states, [v.mean() for v in values])
    if any(c is not None and c >= largest_tested for d in d_states for c in capacities[d]):
        return Estimate(point, None, None, n, upper_open=True)
    rng = np.random.default_rng(seed)
    means = np.stack([v[rng.integers(0, v.size, size=(samples, v.size))].mean(axis=1) for v in values], axis=1)
    usable = means[(means > 0).all(axis=1)]
    if len(usable) < confidence * samples:
        return Estimate(point, None, None, n)
    lx = np.log(np.asarray(d_states, dtype=float))
    lx_centred = lx - lx.mean()
    ly = np.log(usable)
    slopes = ((ly - ly.mean(axis=1, keepdims=True)) * lx_centred).sum(axis=1) / (lx_centred**2).sum()
    low, high = _percentiles(slopes, confidence)
    return Estimate(point, low, high, n)


def verdict(measured: Estimate, low: float, high: float, min_seeds: int = MIN_SEEDS) -> str:
    """supported / refuted / inconclusive of a measured interval against the expected [low, high]."""
    if measured.value is None and measured.low is None:
        return "inconclusive"
    if measured.n < min_seeds or measured.low is None:
        return "inconclusive"
    top = math.inf if measured.upper_open else measured.high
    if measured.low >= low and top <= high:
        return "supported"
    if top < low or measured.low > high:
        return "refuted"
    return "inconclusive"


def provisional(verdict_: str, pending: bool) -> str:
    """A verdict that cells not yet run can still change (`pending`): marked so."""
    return verdict_ + PROVISIONAL if pending and verdict_ != "inconclusive" else verdict_


def combine_verdicts(verdicts: Iterable[str]) -> str:
    """Several measured points of one hypothesis: refuted if any is, supported only if all are;
    provisional where the verdict that decides rests on a provisional point."""
    verdicts = list(verdicts)
    if not verdicts:
        return "inconclusive"
    final = [v.removesuffix(PROVISIONAL) for v in verdicts]
    if "refuted" in final:
        return "refuted" if "refuted" in verdicts else "refuted" + PROVISIONAL
    if all(v == "supported" for v in final):
        return "supported" if final == verdicts else "supported" + PROVISIONAL
    return "inconclusive"


def select_on_validation(
    runs: Iterable[T], key: Callable[[T], Hashable], validation: Callable[[T], float], rate: Callable[[T], float]
) -> list[T]:
    """Per `key` (e.g. architecture, num_pairs, d_state, seed, suffix), the run best on validation.

    Ties go to the smaller learning rate. Nothing measured on the test split enters the choice.
    """
    best: dict[Hashable, T] = {}
    for run in runs:
        k = key(run)
        if k not in best or (validation(run), -rate(run)) > (validation(best[k]), -rate(best[k])):
            best[k] = run
    return list(best.values())


def failure_kind(final_loss: float, chance_loss: float, accuracy: float, tolerance: float = PLATEAU_TOLERANCE) -> str:
    """A failed seed: "chance plateau" when its final training loss is within `tolerance` of the
    chance loss (it never left the uniform guess over values); "no recall" when the loss left it
    but accuracy stayed below PARTIAL_RECALL_MIN; else "partial recall"."""
    if final_loss >= (1 - tolerance) * chance_loss:
        return "chance plateau"
    return "partial recall" if accuracy >= PARTIAL_RECALL_MIN else "no recall"
