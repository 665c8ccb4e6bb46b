"""Byte spans: the one currency of labels, model predictions and baseline findings.

Offsets are half-open byte offsets into the file's raw bytes: `data[start:end]` is the secret.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class Span:
    """A byte range [start, end) with a label (secret format, decoy kind, or a guess) and a score."""

    start: int
    end: int
    format: str = "secret"
    score: float = 1.0

    def __post_init__(self):
        if not 0 <= self.start < self.end:
            raise ValueError(f"a span needs 0 <= start < end, got [{self.start}, {self.end})")

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class LabelledFile:
    """One generated file's ground truth, as a line of `<split>/labels.jsonl` holds it.

    relpath: path relative to the split directory, e.g. "files/0003_settings.py"; kind: the carrier
    (python, yaml, env, minified_js, ...); spans: the planted secrets, sorted, disjoint; decoys:
    look-alikes that are not secrets (format = the decoy kind), never labelled; target_decile: the
    relative-position decile (0-9) the secrets were placed in, None when placed anywhere;
    length_bucket: the target file length the generator drew; cases: the spans among `spans` that
    got a hard-case treatment (format = its name: concat, base64, url_encoded, json_pem, minified),
    both pieces of a split literal included.
    """

    relpath: str
    kind: str
    length: int
    spans: tuple[Span, ...]
    decoys: tuple[Span, ...]
    target_decile: int | None
    length_bucket: int
    cases: tuple[Span, ...] = ()


def spans_to_mask(length: int, spans) -> np.ndarray:
    """(length,) uint8 mask, 1 on every byte covered by a span."""
    mask = np.zeros(length, dtype=np.uint8)
    for span in spans:
        if span.end > length:
            raise ValueError(f"span [{span.start}, {span.end}) runs past the file's {length} bytes")
        mask[span.start : span.end] = 1
    return mask


def mask_to_ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of nonzero bytes as half-open (start, end) pairs, in order."""
    flags = np.concatenate(([0], (np.asarray(mask) != 0).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(flags))
    return [(int(start), int(end)) for start, end in zip(edges[::2], edges[1::2])]
