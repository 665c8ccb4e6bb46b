"""The secret-span scorer on hand-built cases: IoU matching, hit rate, merging, byte P/R/F1, Wilson
intervals, breakdowns, and the documented empty-denominator rule."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from align_mamba.core.errors import ConfigError
from align_mamba.secrets.score import (
    BOUNDARY_COLUMNS,
    BREAKDOWN_COLUMNS,
    Boundary,
    best_boundary,
    boundary_table,
    byte_prf,
    iou,
    match_spans,
    merge_spans,
    score_split,
    wilson_interval,
)
from align_mamba.secrets.spans import LabelledFile, Span


def labelled(relpath, length, spans=(), decoys=(), decile=None, bucket=1000):
    return LabelledFile(
        relpath=relpath,
        kind="python",
        length=length,
        spans=tuple(spans),
        decoys=tuple(decoys),
        target_decile=decile,
        length_bucket=bucket,
    )


# --- Wilson interval: hand-computed with p = s/n, z = 1.96 ---


def test_wilson_matches_hand_computed_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # 0/5: centre = (z²/10) / (1 + z²/5) = 0.21725 and the half-width equals it
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.4345), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(2, 2) == pytest.approx((0.3424, 1.0), abs=1e-4)


def test_wilson_empty_and_invalid():
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ConfigError, match="successes"):
        wilson_interval(11, 10)


# --- byte P/R/F1 ---


def test_byte_prf_hand_computed():
    truth = np.array([0, 1, 1, 1, 0, 0, 0, 0, 1, 1])  # 5 secret bytes
    pred = np.array([0, 0, 1, 1, 1, 1, 1, 0, 0, 1])  # 6 predicted, overlap at 2, 3, 9
    precision, recall, f1 = byte_prf(truth, pred)
    assert (precision, recall) == pytest.approx((3 / 6, 3 / 5))
    assert f1 == pytest.approx(2 * 0.5 * 0.6 / 1.1)


def test_byte_prf_empty_cases_follow_the_documented_rule():
    ones, zeros = np.ones(4), np.zeros(4)
    assert byte_prf(ones, zeros) == (1.0, 0.0, 0.0)  # nothing predicted: precision 1, recall 0
    assert byte_prf(zeros, zeros) == (1.0, 1.0, 1.0)  # nothing to find, nothing claimed
    assert byte_prf(zeros, ones) == (0.0, 1.0, 0.0)  # every claim wrong
    with pytest.raises(ConfigError, match="shape"):
        byte_prf(np.ones(3), np.ones(4))


# --- matching ---


def test_exact_match_and_the_half_iou_boundary():
    assert match_spans([Span(10, 20)], [Span(10, 20)]) == [(0, 0)]
    assert iou(Span(0, 10), Span(0, 5)) == 0.5
    assert match_spans([Span(0, 10)], [Span(0, 5)], 0.5) == [(0, 0)]  # IoU exactly 0.5 counts
    assert match_spans([Span(0, 10)], [Span(0, 5)], 0.51) == []
    assert match_spans([Span(0, 10)], [Span(0, 4)], 0.5) == []  # IoU 0.4
    assert match_spans([Span(0, 10)], [Span(10, 20)], 0.01) == []  # touching is not overlapping


def test_one_prediction_covering_two_truths_matches_only_one():
    truth = [Span(0, 10), Span(10, 20)]
    assert match_spans(truth, [Span(0, 20)]) == [(0, 0)]  # IoU 0.5 with each; the first truth wins
    scores = score_split([labelled("files/a.py", 30, truth)], {"files/a.py": [Span(0, 20)]})
    assert (scores.span_tp, scores.span_recall, scores.span_precision) == (1, 0.5, 1.0)
    assert scores.hit_rate == 1.0  # both truths are overlapped


def test_two_predictions_on_one_truth_give_one_tp_one_fp():
    assert match_spans([Span(0, 20)], [Span(2, 20), Span(0, 20)]) == [(0, 1)]  # the better IoU
    # In score_split, predictions further apart than merge_gap stay two spans.
    scores = score_split([labelled("files/a.py", 30, [Span(0, 20)])], {"files/a.py": [Span(0, 12), Span(15, 20)]})
    assert (scores.n_pred, scores.span_tp, scores.span_precision, scores.span_recall) == (2, 1, 0.5, 1.0)
    assert scores.false_alarms == 0  # both overlap the secret, so neither is a false alarm


def _greedy_best_iou(truth, predicted, threshold):
    """The tempting alternative: take the globally best remaining pair until none is left."""
    pairs = sorted(((iou(t, p), i, j) for i, t in enumerate(truth) for j, p in enumerate(predicted)), reverse=True)
    used_t, used_p, out = set(), set(), []
    for value, i, j in pairs:
        if value >= threshold and i not in used_t and j not in used_p:
            used_t.add(i), used_p.add(j), out.append((i, j))
    return out


def test_optimal_matching_beats_greedy_on_a_counterexample():
    truth = [Span(0, 10), Span(10, 20)]
    predicted = [Span(2, 17), Span(0, 4)]  # IoU: p0-t0 8/17, p0-t1 7/18, p1-t0 4/10
    assert len(_greedy_best_iou(truth, predicted, 0.3)) == 1  # p0 takes t0, p1 is stranded
    assert match_spans(truth, predicted, 0.3) == [(0, 1), (1, 0)]


def _brute_force_size(truth, predicted, threshold):
    """Largest matching by trying every injective assignment of truths to predictions or nothing."""
    best = 0
    options = list(range(len(predicted))) + [None] * len(truth)
    for chosen in itertools.permutations(options, len(truth)):
        picked = [j for j in chosen if j is not None]
        if len(set(picked)) == len(picked) and all(
            j is None or iou(truth[i], predicted[j]) >= threshold for i, j in enumerate(chosen)
        ):
            best = max(best, len(picked))
    return best


def test_matching_size_equals_brute_force_on_random_intervals():
    # Overlapping intervals on a short axis at low thresholds: dense candidate graphs, where
    # greedy-by-IoU falls short in a few percent of cases (checked below) and Kuhn must not.
    rng = random.Random(0)

    def spans(n):
        return [Span(s, s + rng.randint(1, 8)) for s in (rng.randint(0, 14) for _ in range(n))]

    greedy_short = 0
    for _ in range(300):
        truth, predicted = spans(rng.randint(0, 4)), spans(rng.randint(0, 5))
        threshold = rng.choice([0.1, 0.2, 0.3, 0.5])
        pairs = match_spans(truth, predicted, threshold)
        best = _brute_force_size(truth, predicted, threshold)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        assert all(iou(truth[i], predicted[j]) >= threshold for i, j in pairs)
        assert len(pairs) == best
        greedy_short += len(_greedy_best_iou(truth, predicted, threshold)) < best
    assert greedy_short > 0  # the cases are hard enough to tell optimal from greedy


def test_match_threshold_must_be_a_fraction():
    with pytest.raises(ConfigError, match="iou_threshold"):
        match_spans([Span(0, 1)], [Span(0, 1)], 0.0)


# --- merging ---

PEM_LINES = [b"-----BEGIN EC PRIVATE KEY-----", b"MHcCAQEEIAbc", b"AwEHoUQDQgAE", b"-----END EC PRIVATE KEY-----"]


def _line_spans(text: bytes, lines, fmt="PEM Private Key"):
    out, pos = [], 0
    for k, line in enumerate(lines):
        start = text.index(line, pos)
        out.append(Span(start, start + len(line), fmt, score=0.5 + k / 10))
        pos = start + len(line)
    return out


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_pem_reported_line_by_line_merges_into_one_span(newline):
    block = newline.join(PEM_LINES)
    text = b"key = '''" + block + b"'''\n"
    lines = _line_spans(text, PEM_LINES)
    start = text.index(block)
    assert merge_spans(list(reversed(lines))) == [Span(start, start + len(block), "PEM Private Key", 0.8)]
    f = labelled("files/k.py", len(text), [Span(start, start + len(block), "pem")])
    assert score_split([f], {"files/k.py": lines}).span_tp == 1
    assert score_split([f], {"files/k.py": lines}, merge_gap=0).span_tp == 0  # each line alone < IoU 0.5


def test_merge_gap_is_inclusive_and_keeps_first_format():
    assert merge_spans([Span(0, 4, "a"), Span(7, 9, "b")], 3) == [Span(0, 9, "a")]
    assert merge_spans([Span(0, 4, "a"), Span(7, 9, "b")], 2) == [Span(0, 4, "a"), Span(7, 9, "b")]
    assert merge_spans([Span(5, 9, "b", 0.9), Span(0, 6, "a", 0.2)], 0) == [Span(0, 9, "a", 0.9)]
    with pytest.raises(ConfigError, match="merge gap"):
        merge_spans([], -1)


# --- score_split ---


def test_empty_predictions_have_precision_one_and_recall_zero():
    files = [labelled("files/a.py", 100, [Span(10, 30, "aws")])]
    scores = score_split(files, {})
    assert (scores.n_pred, scores.span_precision, scores.span_recall, scores.span_f1) == (0, 1.0, 0.0, 0.0)
    assert (scores.byte_precision, scores.byte_recall, scores.hit_rate, scores.false_alarms) == (1.0, 0.0, 0.0, 0)


def test_files_without_secrets_count_for_false_alarms_and_bytes_only():
    files = [
        labelled("files/clean.py", 500_000, decoys=[Span(100, 140, "git_sha"), Span(300, 336, "uuid")]),
        labelled("files/other.py", 500_000),
    ]
    scores = score_split(
        files,
        {"files/clean.py": [Span(90, 120, "Hex High Entropy String")], "files/other.py": [Span(0, 8), Span(20, 30)]},
    )
    assert (scores.bytes, scores.n_true, scores.n_pred, scores.false_alarms) == (1_000_000, 0, 3, 3)
    assert scores.false_alarms_per_mb == pytest.approx(3.0)
    assert (scores.span_precision, scores.span_recall, scores.hit_rate) == (0.0, 1.0, 1.0)
    assert (scores.n_decoys, scores.decoy_hits) == (2, 1)
    for frame in (scores.per_format, scores.by_decile, scores.by_length):
        assert frame.empty and list(frame.columns)[1:] == BREAKDOWN_COLUMNS
    assert scores.boundary.empty and list(scores.boundary.columns) == ["format", *BOUNDARY_COLUMNS]


def _breakdown_set():
    files = [
        labelled("files/a.py", 100, [Span(0, 20, "aws"), Span(30, 70, "github")], decile=0, bucket=100),
        labelled("files/b.env", 200, [Span(10, 30, "aws")], decile=9, bucket=1000),
        labelled("files/c.pem", 50, [Span(0, 40, "pem")], decile=None, bucket=100),
    ]
    predictions = {
        "files/a.py": [Span(0, 20, "AWS"), Span(30, 35, "Token")],  # exact; a low-IoU hit
        "files/b.env": [Span(10, 30, "AWS")],
    }
    return files, predictions


def test_headline_numbers_on_a_tiny_set():
    scores = score_split(*_breakdown_set())
    assert (scores.files, scores.bytes, scores.n_true, scores.n_pred, scores.span_tp) == (3, 350, 4, 3, 2)
    assert (scores.span_precision, scores.span_recall) == pytest.approx((2 / 3, 2 / 4))
    assert scores.hit_rate == 3 / 4
    assert (scores.byte_precision, scores.byte_recall) == pytest.approx((45 / 45, 45 / 120))
    assert scores.false_alarms == 0


def test_breakdowns_by_format_decile_and_length():
    scores = score_split(*_breakdown_set())

    def rows(frame, key):
        return {r[key]: (r["true"], r["recalled"]) for r in frame.to_dict("records")}

    assert list(scores.per_format["format"]) == ["aws", "github", "pem"]
    assert rows(scores.per_format, "format") == {"aws": (2, 2), "github": (1, 0), "pem": (1, 0)}
    assert list(scores.by_decile["target_decile"]) == [0, 9, None]  # placed anywhere sorts last
    assert rows(scores.by_decile, "target_decile") == {0: (2, 1), 9: (1, 1), None: (1, 0)}
    assert rows(scores.by_length, "length_bucket") == {100: (3, 1), 1000: (1, 1)}
    aws = scores.per_format.iloc[0]
    assert (aws["recall"], aws["wilson_low"], aws["wilson_high"]) == pytest.approx((1.0, 0.3424, 1.0), abs=1e-4)
    assert scores.by_length.iloc[0]["recall"] == pytest.approx(1 / 3)


def test_to_dict_is_strict_json_with_records():
    scores = score_split(*_breakdown_set())
    out = json.loads(json.dumps(scores.to_dict(), allow_nan=False))
    assert out["span_tp"] == 2 and out["by_decile"][-1]["target_decile"] is None
    assert out["per_format"][0] == {
        "format": "aws",
        "true": 2,
        "recalled": 2,
        "recall": 1.0,
        "wilson_low": pytest.approx(0.3424, abs=1e-4),
        "wilson_high": 1.0,
    }


def test_bad_predictions_are_one_line_errors():
    files = [labelled("files/a.py", 10, [Span(0, 5)])]
    with pytest.raises(ConfigError, match="not in the split, e.g. 'a.py'"):
        score_split(files, {"a.py": [Span(0, 5)]})
    with pytest.raises(ConfigError, match="runs past files/a.py's 10 bytes"):
        score_split(files, {"files/a.py": [Span(5, 11)]})
    with pytest.raises(ConfigError, match="at least one"):
        score_split([], {})


# --- boundary accuracy: each true span's best prediction ---


def test_best_boundary_by_hand():
    truth = Span(10, 20, "glpat")
    assert best_boundary(truth, [Span(12, 20), Span(30, 40)]) == Boundary("glpat", 0.8, 2, 0)  # 8 / 10
    # [5, 15) overlaps 5 of 15 bytes (IoU 1/3), [16, 22) 4 of 12 (1/3): equal, the first wins
    assert best_boundary(truth, [Span(5, 15), Span(16, 22)]) == Boundary("glpat", 1 / 3, 5, 5)
    assert best_boundary(truth, [Span(0, 8), Span(20, 30)]) == Boundary("glpat", 0.0, None, None)  # touching only
    assert best_boundary(truth, []) == Boundary("glpat", 0.0, None, None)


def test_boundary_table_quartiles_shares_and_errors():
    rows = [
        Boundary("a", 1.0, 0, 0),
        Boundary("a", 0.8, 2, 0),
        Boundary("a", 0.5, 0, 10),
        Boundary("a", 0.0, None, None),
        Boundary("b", 0.95, 1, 0),
    ]
    table = boundary_table(rows).set_index("format")
    a = table.loc["a"]
    # IoUs 0, 0.5, 0.8, 1.0: linear quartiles 0.375, 0.65, 0.85
    assert (a["true"], a["located"]) == (4, 3)
    assert (a["iou_q25"], a["iou_median"], a["iou_q75"]) == pytest.approx((0.375, 0.65, 0.85))
    assert (a["iou_ge_50"], a["iou_ge_90"]) == (0.75, 0.25)
    assert (a["mean_start_error"], a["mean_end_error"]) == pytest.approx((2 / 3, 10 / 3))  # the located three
    assert table.loc["b", "iou_median"] == 0.95 and table.loc["b", "iou_ge_90"] == 1.0
    missed = boundary_table([Boundary("c", 0.0, None, None)]).iloc[0]
    assert math.isnan(missed["mean_start_error"]) and missed["located"] == 0


def test_split_scores_carry_boundary_per_format_into_json():
    files = [
        labelled("files/a.py", 100, [Span(10, 20, "glpat"), Span(50, 70, "aws")]),
        labelled("files/b.py", 100, [Span(0, 20, "aws")]),
    ]
    predictions = {"files/a.py": [Span(12, 20), Span(50, 66)], "files/b.py": []}
    scores = score_split(files, predictions)
    out = json.loads(json.dumps(scores.to_dict(), allow_nan=False))
    assert out["boundary"] == [
        {
            "format": "aws",
            "true": 2,
            "located": 1,
            "iou_q25": pytest.approx(0.2),
            "iou_median": pytest.approx(0.4),
            "iou_q75": pytest.approx(0.6),
            "iou_ge_50": 0.5,
            "iou_ge_90": 0.0,
            "mean_start_error": 0.0,
            "mean_end_error": 4.0,
        },
        {
            "format": "glpat",
            "true": 1,
            "located": 1,
            "iou_q25": pytest.approx(0.8),
            "iou_median": pytest.approx(0.8),
            "iou_q75": pytest.approx(0.8),
            "iou_ge_50": 1.0,
            "iou_ge_90": 0.0,
            "mean_start_error": 2.0,
            "mean_end_error": 0.0,
        },
    ]
    # boundaries are of merged predictions: two halves 1 byte apart score as one span
    merged = score_split(
        [labelled("files/a.py", 100, [Span(10, 30, "pem")])], {"files/a.py": [Span(10, 19), Span(20, 30)]}
    )
    assert merged.boundary.iloc[0]["iou_median"] == 1.0


def test_recall_by_hard_case_by_hand():
    """A plain secret, a literal split in two by a concatenation (two spans, both `concat`) and a
    base64-wrapped one; the tagger finds the plain one and the split's first piece."""
    f = LabelledFile(
        relpath="files/a.py",
        kind="python",
        length=200,
        spans=(Span(10, 30, "aws"), Span(50, 60, "aws"), Span(65, 75, "aws"), Span(100, 140, "aws")),
        decoys=(),
        target_decile=None,
        length_bucket=1000,
        cases=(Span(50, 60, "concat"), Span(65, 75, "concat"), Span(100, 140, "base64")),
    )
    scores = score_split([f], {"files/a.py": [Span(10, 30), Span(50, 60)]})
    rows = {r["case"]: (r["recalled"], r["true"]) for r in scores.to_dict()["by_case"]}
    assert rows == {"plain": (1, 1), "concat": (1, 2), "base64": (0, 1)}
