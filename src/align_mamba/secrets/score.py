"""Scoring predicted secret spans against the labels of a split.

Span level: predictions are first merged (`merge_spans`: a PEM key reported line by line becomes one
span), then matched one-to-one to the true spans at IoU >= threshold (`match_spans`, a maximum
matching). Also: the any-overlap hit rate, byte precision/recall/F1 pooled over the split's bytes,
false alarms per MB, span recall by secret format, target decile, file length and hard case
(base64, concat, ...; `plain` for a secret written as is) with Wilson 95% intervals, and per format
how well predictions bound the true spans (`boundary_table`: the distribution of each true span's
best IoU and its start/end errors in bytes).

Empty denominators follow one rule everywhere: precision with nothing predicted is 1.0 (no claim
was wrong) and recall (or hit rate) with nothing to find is 1.0 (nothing was missed); F1 is 0.0
when precision + recall = 0. So predicting nothing where secrets exist scores P=1, R=0, F1=0;
predicting nothing where none exist scores 1, 1, 1; any prediction there scores P=0, R=1, F1=0.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from align_mamba.core.errors import ConfigError
from align_mamba.secrets.spans import LabelledFile, Span, spans_to_mask

BREAKDOWN_COLUMNS = ["true", "recalled", "recall", "wilson_low", "wilson_high"]
BREAKDOWNS = {"per_format": "format", "by_decile": "target_decile", "by_length": "length_bucket", "by_case": "case"}
PLAIN = "plain"  # by_case's value for a true span written as is (no hard-case treatment)
BOUNDARY_COLUMNS = [
    "true",
    "located",
    "iou_q25",
    "iou_median",
    "iou_q75",
    "iou_ge_50",
    "iou_ge_90",
    "mean_start_error",
    "mean_end_error",
]


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (nan, nan) when total is 0."""
    if total < 0 or not 0 <= successes <= total:
        raise ConfigError(f"wilson_interval needs 0 <= successes <= total, got {successes}/{total}")
    if total == 0:
        return math.nan, math.nan
    p = successes / total
    denom = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts, with the module's empty-denominator rule."""
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def byte_prf(truth_mask, pred_mask) -> tuple[float, float, float]:
    """Precision, recall, F1 over bytes of two (L,) masks (nonzero = secret byte).

    Nothing predicted: precision 1.0; nothing true: recall 1.0; F1 0.0 when P + R = 0.
    """
    truth = np.asarray(truth_mask) != 0  # (L,)
    pred = np.asarray(pred_mask) != 0  # (L,)
    if truth.shape != pred.shape:
        raise ConfigError(f"byte_prf needs masks of one shape, got {truth.shape} and {pred.shape}")
    return _prf(int(np.count_nonzero(truth & pred)), int(np.count_nonzero(pred)), int(np.count_nonzero(truth)))


def iou(a: Span, b: Span) -> float:
    """Intersection over union of two byte ranges."""
    inter = min(a.end, b.end) - max(a.start, b.start)
    if inter <= 0:
        return 0.0
    return inter / (max(a.end, b.end) - min(a.start, b.start))


def merge_spans(spans: Sequence[Span], max_gap: int = 2) -> list[Span]:
    """Sorted spans with any two at most `max_gap` bytes apart (or overlapping) merged into one.

    A merged span keeps the highest score and the format of its first (leftmost) span. max_gap 2
    joins lines split by "\\n" or "\\r\\n", so line-by-line findings of one PEM block become one span.
    """
    if max_gap < 0:
        raise ConfigError(f"merge gap must be >= 0 bytes, got {max_gap}")
    merged: list[Span] = []
    for span in sorted(spans):
        last = merged[-1] if merged else None
        if last is not None and span.start <= last.end + max_gap:
            merged[-1] = Span(last.start, max(last.end, span.end), last.format, max(last.score, span.score))
        else:
            merged.append(span)
    return merged


def _candidates(truth: Sequence[Span], predicted: Sequence[Span], threshold: float) -> list[list[int]]:
    """Per true span, the predicted indices with IoU >= threshold, best IoU first, then by index."""
    order = sorted(range(len(predicted)), key=lambda j: predicted[j].start)
    starts = [predicted[j].start for j in order]
    out = []
    for t in truth:
        near = [j for j in order[: bisect.bisect_left(starts, t.end)] if predicted[j].end > t.start]
        scored = [(iou(t, predicted[j]), j) for j in near]
        out.append([j for value, j in sorted(scored, key=lambda s: (-s[0], s[1])) if value >= threshold])
    return out


def match_spans(truth: Sequence[Span], predicted: Sequence[Span], iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """Maximum one-to-one matching of true to predicted spans among pairs with IoU >= threshold.

    Returns sorted (truth index, predicted index) pairs. Kuhn's augmenting paths: each true span in
    order looks for a free prediction or re-routes an earlier match, so the count is maximal (Berge:
    no augmenting path is left). Candidates are tried by decreasing IoU, then index, so the chosen
    maximum matching is a fixed function of the inputs' order.
    """
    if not 0 < iou_threshold <= 1:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    candidates = _candidates(truth, predicted, iou_threshold)
    owner: dict[int, int] = {}  # predicted index -> truth index

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(truth)):
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())


def _overlapped(queries: Sequence[Span], others: Sequence[Span]) -> list[bool]:
    """For each query span, whether any of `others` shares at least one byte with it."""
    cover = merge_spans(others, 0)  # disjoint and sorted, so ends are sorted too
    ends = [c.end for c in cover]
    flags = []
    for q in queries:
        k = bisect.bisect_right(ends, q.start)  # first cover span ending after q starts
        flags.append(k < len(cover) and cover[k].start < q.end)
    return flags


@dataclass(frozen=True)
class Boundary:
    """How closely the best prediction bounds one true span of `format`.

    iou: the largest IoU of any (merged) prediction with the span, 0.0 when none overlaps it;
    start_error / end_error: |predicted - true| start and end offsets in bytes of that prediction,
    None when none overlaps.
    """

    format: str
    iou: float
    start_error: int | None
    end_error: int | None


def best_boundary(truth: Span, predicted: Sequence[Span]) -> Boundary:
    """The boundary accuracy of the prediction with the largest IoU with `truth` (the first of equals).

    predicted: sorted and disjoint (merge_spans' output). Worked example: truth [10, 20) and
    predictions [12, 20), [30, 40): [12, 20) overlaps it by 8 of 10 bytes, IoU 0.8, start error 2,
    end error 0; with no prediction overlapping it, Boundary(format, 0.0, None, None).
    """
    ends = [p.end for p in predicted]
    best, best_iou = None, 0.0
    for p in predicted[bisect.bisect_right(ends, truth.start) :]:
        if p.start >= truth.end:
            break
        value = iou(truth, p)
        if value > best_iou:
            best, best_iou = p, value
    if best is None:
        return Boundary(truth.format, 0.0, None, None)
    return Boundary(truth.format, best_iou, abs(best.start - truth.start), abs(best.end - truth.end))


def _mean_or_nan(values: list[int]) -> float:
    return float(np.mean(values)) if values else math.nan


def _boundary_record(name: str, group: list[Boundary]) -> list:
    """One format's row of boundary_table: [format, *BOUNDARY_COLUMNS]."""
    ious = np.array([row.iou for row in group])  # (spans,)
    starts = [row.start_error for row in group if row.start_error is not None]
    ends = [row.end_error for row in group if row.end_error is not None]
    q25, median, q75 = np.percentile(ious, [25, 50, 75])
    shares = [float(np.mean(ious >= 0.5)), float(np.mean(ious >= 0.9))]
    return [name, len(group), len(starts), q25, median, q75, *shares, _mean_or_nan(starts), _mean_or_nan(ends)]


def boundary_table(rows: Sequence[Boundary]) -> pd.DataFrame:
    """One row per format (sorted) with BOUNDARY_COLUMNS, from each true span's best boundary.

    true: its spans; located: those some prediction overlaps; iou_q25 / iou_median / iou_q75: the
    quartiles of the best IoU over all its spans (0 for a missed one); iou_ge_50 / iou_ge_90: the
    share of its spans with best IoU >= 0.5 / >= 0.9; mean_start_error / mean_end_error: the mean
    absolute offset errors in bytes over the located spans (NaN when none is). iou_ge_50 can exceed
    span recall: a prediction may be the best for two true spans here but matches only one there.
    """
    by_format: dict[str, list[Boundary]] = {}
    for row in rows:
        by_format.setdefault(row.format, []).append(row)
    records = [_boundary_record(name, by_format[name]) for name in sorted(by_format)]
    frame = pd.DataFrame(records, columns=["format", *BOUNDARY_COLUMNS])
    dtypes = {"format": object, "true": "int64", "located": "int64", **dict.fromkeys(BOUNDARY_COLUMNS[2:], "float64")}
    return frame.astype(dtypes)


@dataclass(frozen=True, eq=False)
class SplitScores:
    """One split's scores. Counts of predictions are after merging (what was matched).

    false_alarms: merged predictions overlapping no true span (decoy hits included);
    n_decoys / decoy_hits: labelled decoys, and those overlapped by any prediction.
    per_format / by_decile / by_length / by_case: one row per value of the true span's format, its
    file's target_decile (None = placed anywhere) or length_bucket, or the hard case it was written
    as (`PLAIN`: none), with columns BREAKDOWN_COLUMNS;
    recall there is span recall at the IoU threshold, with a Wilson 95% interval. boundary: one row
    per format of the true spans, with BOUNDARY_COLUMNS (`boundary_table`).
    """

    files: int
    bytes: int
    n_true: int
    n_pred: int
    span_tp: int
    span_precision: float
    span_recall: float
    span_f1: float
    hit_rate: float
    byte_precision: float
    byte_recall: float
    byte_f1: float
    false_alarms: int
    false_alarms_per_mb: float
    n_decoys: int
    decoy_hits: int
    per_format: pd.DataFrame
    by_decile: pd.DataFrame
    by_length: pd.DataFrame
    by_case: pd.DataFrame
    boundary: pd.DataFrame

    def to_dict(self) -> dict:
        """JSON-safe: the scalars, and each breakdown as a list of records (NaN becomes None)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, pd.DataFrame):
                out[f.name] = [{k: _json_safe(v) for k, v in row.items()} for row in value.to_dict("records")]
            else:
                out[f.name] = _json_safe(value)
        return out


def _json_safe(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _breakdown(records: list[dict], key: str) -> pd.DataFrame:
    """Span recall per value of `key` over the true-span records ({key..., "recalled": bool})."""
    true, hit = Counter(), Counter()
    for rec in records:
        true[rec[key]] += 1
        hit[rec[key]] += rec["recalled"]
    values = sorted(true, key=lambda v: (v is None, v))
    intervals = [wilson_interval(hit[v], true[v]) for v in values]
    return pd.DataFrame(
        {
            key: pd.Series(values, dtype=object),  # object keeps int deciles next to None
            "true": pd.Series([true[v] for v in values], dtype="int64"),
            "recalled": pd.Series([hit[v] for v in values], dtype="int64"),
            "recall": pd.Series([hit[v] / true[v] for v in values], dtype="float64"),
            "wilson_low": pd.Series([low for low, _ in intervals], dtype="float64"),
            "wilson_high": pd.Series([high for _, high in intervals], dtype="float64"),
        }
    )


def _case_of(span: Span, cases: Sequence[Span]) -> str:
    """The hard case a true span was written as: the first case span overlapping it, else PLAIN."""
    return next((c.format for c in cases if c.start < span.end and span.start < c.end), PLAIN)


def _checked_predictions(f: LabelledFile, spans: Sequence[Span]) -> list[Span]:
    bad = [s for s in spans if s.end > f.length]
    if bad:
        raise ConfigError(f"prediction [{bad[0].start}, {bad[0].end}) runs past {f.relpath}'s {f.length} bytes")
    return list(spans)


def score_split(
    files: Sequence[LabelledFile],
    predictions: Mapping[str, Sequence[Span]],
    iou_threshold: float = 0.5,
    merge_gap: int = 2,
) -> SplitScores:
    """Score `predictions` (relpath -> spans; a file not in it predicted nothing) on `files`."""
    if not files:
        raise ConfigError("score_split needs at least one labelled file")
    paths = [f.relpath for f in files]
    if len(set(paths)) != len(paths):
        raise ConfigError(f"duplicate relpath in the split: {Counter(paths).most_common(1)[0][0]!r}")
    unknown = sorted(set(predictions) - set(paths))
    if unknown:
        raise ConfigError(f"predictions for {len(unknown)} file(s) not in the split, e.g. {unknown[0]!r}")
    n = Counter()
    records = []
    boundaries: list[Boundary] = []
    for f in files:
        pred = merge_spans(_checked_predictions(f, predictions.get(f.relpath, ())), merge_gap)
        matched = {i for i, _ in match_spans(f.spans, pred, iou_threshold)}
        hits = _overlapped(f.spans, pred)
        truth_mask = spans_to_mask(f.length, f.spans)  # (L,)
        pred_mask = spans_to_mask(f.length, pred)  # (L,)
        n.update(
            bytes=f.length,
            true=len(f.spans),
            pred=len(pred),
            tp=len(matched),
            hits=sum(hits),
            false_alarms=_overlapped(pred, f.spans).count(False),
            decoys=len(f.decoys),
            decoy_hits=sum(_overlapped(f.decoys, pred)),
            byte_tp=int(np.count_nonzero(truth_mask & pred_mask)),
            byte_pred=int(pred_mask.sum()),
            byte_true=int(truth_mask.sum()),
        )
        records += [
            {
                "format": s.format,
                "target_decile": f.target_decile,
                "length_bucket": f.length_bucket,
                "case": _case_of(s, f.cases),
                "recalled": i in matched,
            }
            for i, s in enumerate(f.spans)
        ]
        boundaries += [best_boundary(s, pred) for s in f.spans]
    span_p, span_r, span_f1 = _prf(n["tp"], n["pred"], n["true"])
    byte_p, byte_r, byte_f1 = _prf(n["byte_tp"], n["byte_pred"], n["byte_true"])
    return SplitScores(
        files=len(files),
        bytes=n["bytes"],
        n_true=n["true"],
        n_pred=n["pred"],
        span_tp=n["tp"],
        span_precision=span_p,
        span_recall=span_r,
        span_f1=span_f1,
        hit_rate=n["hits"] / n["true"] if n["true"] else 1.0,
        byte_precision=byte_p,
        byte_recall=byte_r,
        byte_f1=byte_f1,
        false_alarms=n["false_alarms"],
        false_alarms_per_mb=n["false_alarms"] / (n["bytes"] / 1e6) if n["bytes"] else math.nan,
        n_decoys=n["decoys"],
        decoy_hits=n["decoy_hits"],
        **{name: _breakdown(records, key) for name, key in BREAKDOWNS.items()},
        boundary=boundary_table(boundaries),
    )
