"""The report's statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from align_mamba.report.stats import (
    Estimate,
    capacity,
    capacity_estimate,
    combine_verdicts,
    failure_kind,
    loglog_slope,
    provisional,
    select_on_validation,
    slope_estimate,
    verdict,
    wilson,
    z_value,
)


def test_wilson_three_of_five_at_95_percent():
    # p = 0.6, z = 1.959964, n = 5: centre (0.6 + z²/10) / (1 + z²/5) = 0.55655,
    # half-width z·sqrt(0.048 + z²/100) / (1 + z²/5) = 0.32583 → [0.23072, 0.88238]
    low, high = wilson(3, 5, 0.95)
    assert low == pytest.approx(0.23072, abs=1e-5) and high == pytest.approx(0.88238, abs=1e-5)
    assert wilson(0, 5)[0] == pytest.approx(0.0, abs=1e-12) and wilson(0, 5)[1] == pytest.approx(0.43448, abs=1e-5)
    assert wilson(5, 5)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_capacity_is_the_largest_passing_num_pairs_or_none():
    assert capacity({4: 1.0, 8: 0.95, 16: 0.3, 32: 0.1}, 0.9) == 8
    assert capacity({4: 1.0, 8: 0.2, 16: 0.91}, 0.9) == 16  # the largest that passes, not the first failure
    assert capacity({4: 0.5, 8: 0.2}, 0.9) is None


def test_bootstrap_capacity_interval_on_synthetic_seeds():
    # two seeds with capacities 8 and 16: resampled means are 8, 12, 16 with chances 1/4, 1/2, 1/4,
    # so the 95% percentile interval is [8, 16] around the mean 12
    estimate = capacity_estimate([8, 16], largest_tested=64, samples=4000, confidence=0.95, seed=0)
    assert (estimate.value, estimate.low, estimate.high, estimate.n) == (12.0, 8.0, 16.0, 2)
    assert not estimate.upper_open
    same = capacity_estimate([16, 16, 16], 64, 1000, 0.95)
    assert (same.value, same.low, same.high) == (16.0, 16.0, 16.0)
    # a seed without capacity counts 0; no seed with one: no capacity at all
    assert capacity_estimate([None, 16], 64, 1000, 0.95).value == 8.0
    assert capacity_estimate([None, None], 64, 1000, 0.95).value is None
    # still passing at the largest num_pairs tested: a lower bound, the interval's top is open
    assert capacity_estimate([64, 32], 64, 1000, 0.95).upper_open
    # the same seed gives the same interval
    a = capacity_estimate([4, 8, 16, 8, 4], 64, 500, 0.9, seed=3)
    assert a == capacity_estimate([4, 8, 16, 8, 4], 64, 500, 0.9, seed=3)


def test_slope_of_exact_power_laws():
    assert loglog_slope([8, 16, 32, 64], [2 * d for d in (8, 16, 32, 64)]) == pytest.approx(1.0)
    assert loglog_slope([8, 16, 32], [3 * d**0.5 for d in (8, 16, 32)]) == pytest.approx(0.5)
    # every seed on capacity = d_state / 2: slope 1 and a bootstrap interval of width 0
    exact = slope_estimate({8: [4, 4], 16: [8, 8], 32: [16, 16]}, largest_tested=128, samples=500, confidence=0.95)
    assert exact.value == pytest.approx(1.0) and exact.low == pytest.approx(1.0) and exact.high == pytest.approx(1.0)
    # two d_states, seeds {8, 16} and {16, 32}: mean slope log2(24/12) = 1, extremes log2(16/16) = 0
    # and log2(32/8) = 2 each drawn with chance 1/16: the 95% interval is [0, 2]
    spread = slope_estimate({8: [8, 16], 16: [16, 32]}, 128, 4000, 0.95)
    assert spread.value == pytest.approx(1.0) and spread.low == pytest.approx(0.0) and spread.high == pytest.approx(2.0)
    # no capacity at one d_state: no slope; a censored capacity: a slope without an interval
    assert slope_estimate({8: [None, None], 16: [8, 8]}, 128, 500, 0.95).value is None
    censored = slope_estimate({8: [8, 8], 16: [128, 128]}, 128, 500, 0.95)
    assert censored.value == pytest.approx(4.0) and censored.low is None


def test_each_verdict_rule():
    inside = Estimate(0.95, 0.92, 0.98, n=3)
    assert verdict(inside, 0.9, 1.0) == "supported"
    assert verdict(Estimate(0.3, 0.1, 0.5, n=3), 0.9, 1.0) == "refuted"  # entirely below
    assert verdict(Estimate(1.5, 1.2, 1.8, n=3), 0.5, 1.0) == "refuted"  # entirely above
    assert verdict(Estimate(0.9, 0.8, 0.97, n=3), 0.9, 1.0) == "inconclusive"  # straddles the low end
    assert verdict(Estimate(0.95, 0.92, 0.98, n=1), 0.9, 1.0) == "inconclusive"  # one seed
    assert verdict(Estimate(None, None, None, n=0), 0.9, 1.0) == "inconclusive"  # not measured
    # an open top (censored capacity) can still be refuted from below, never supported
    assert verdict(Estimate(64, 64, 64, n=2, upper_open=True), 0.5, 2.0) == "refuted"
    assert verdict(Estimate(1.0, 1.0, 1.0, n=2, upper_open=True), 0.5, 2.0) == "inconclusive"
    assert combine_verdicts(["supported", "supported"]) == "supported"
    assert combine_verdicts(["supported", "inconclusive"]) == "inconclusive"
    assert combine_verdicts(["supported", "refuted", "inconclusive"]) == "refuted"
    assert combine_verdicts([]) == "inconclusive"
    # a point with cells still to run marks what it decides, and only that
    assert provisional("supported", True) == "supported (provisional)" and provisional("refuted", False) == "refuted"
    assert provisional("inconclusive", True) == "inconclusive"
    assert combine_verdicts(["supported", "supported (provisional)"]) == "supported (provisional)"
    assert combine_verdicts(["refuted (provisional)", "refuted"]) == "refuted"
    assert combine_verdicts(["refuted (provisional)", "supported"]) == "refuted (provisional)"
    assert combine_verdicts(["supported (provisional)", "inconclusive"]) == "inconclusive"


def test_learning_rate_selection_follows_validation_and_ignores_test():
    # (seed, lr, validation accuracy, test accuracy): test disagrees with validation on purpose
    runs = [
        (0, 1e-3, 0.40, 0.99),
        (0, 1e-2, 0.90, 0.10),
        (1, 1e-3, 0.95, 0.20),
        (1, 1e-2, 0.50, 0.98),
        (2, 1e-3, 0.70, 0.30),
        (2, 1e-2, 0.70, 0.90),
    ]
    chosen = select_on_validation(runs, key=lambda r: r[0], validation=lambda r: r[2], rate=lambda r: r[1])
    assert sorted(chosen) == [(0, 1e-2, 0.90, 0.10), (1, 1e-3, 0.95, 0.20), (2, 1e-3, 0.70, 0.30)]  # tie: smaller lr


def test_failure_kind_tells_the_chance_plateau_from_partial_recall():
    chance = math.log(4096)
    assert failure_kind(chance, chance, 0.0002) == "chance plateau"
    assert failure_kind(0.97 * chance, chance, 0.0002) == "chance plateau"  # within 5%
    assert failure_kind(0.9 * chance, chance, 0.30) == "partial recall"
    assert failure_kind(1.2, chance, 0.60) == "partial recall"
    # the loss left the plateau (7.84 of 8.32, seen on the GPU) but recall stayed at 0.004: no recall
    assert failure_kind(7.84, chance, 0.004) == "no recall"
