"""Drawing the files of a secret-span dataset: carrier, length, target decile, secrets and decoys.

Worked example: a tiny `.env` file (the env carrier, one aws_access_key_id, no decoys), as
`layout.assemble` lays it out from the pieces `DEBUG=false\\n`, the assignment and `PORT=8080\\n`::

    bytes   b"DEBUG=false\\nAWS_ACCESS_KEY_ID=AKIA2E3MOWZ7QRSTUVWX\\nPORT=8080\\n"   (61 bytes)
    spans   [Span(start=30, end=50, format="aws_access_key_id")]   # data[30:50] == b"AKIA2E3MOWZ7QRSTUVWX"
    mask    30 zeros, 20 ones, 11 zeros                               # spans_to_mask(61, spans)

The span is the value alone: not `AWS_ACCESS_KEY_ID=`, not quotes, not the newline. With
target_decile 4 the window of this 61-byte file is decile_window(61, 4) = [25, 31), which the
span does not fit; the generator only accepts placements where every span lies inside the window.
(The key is random characters in the AKIA shape, not a credential.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from align_mamba.secrets.data.carrier import Carrier
from align_mamba.secrets.data.config import SECRET_SPLITS, SEEN_SPLITS, SecretDataConfig
from align_mamba.secrets.data.decoys import DECOY_KINDS, DECOYS
from align_mamba.secrets.data.formats import FORMATS
from align_mamba.secrets.data.hard import draw_case
from align_mamba.secrets.data.kinds import CARRIERS
from align_mamba.secrets.data.layout import Frame, Mark, Piece, assemble, decile_window, join
from align_mamba.secrets.data.text import Pool, Slots
from align_mamba.core.errors import ConfigError
from align_mamba.secrets.spans import LabelledFile, Span

SPLIT_IDS = {split: i for i, split in enumerate(SECRET_SPLITS)}
# Held-out-format splits first, so that a collision (practically never) redraws a train file.
GENERATION_ORDER = ("test_decoys", "test_unseen", "test", "validation", "train")
# Draws per secret slot before giving up on it (the first secret: before redrawing the file).
_TRIES_FIRST, _TRIES_MORE = 24, 8
_FILE_ATTEMPTS = 64


class _Redraw(Exception):
    """No secret fits the drawn file's target decile: draw the file again."""


@dataclass
class SeenValues:
    """Secret values and file digests already used, so that no two splits (or files) share one."""

    secrets: set[str] = field(default_factory=set)
    files: set[bytes] = field(default_factory=set)


def secret_piece(slots: Slots, carrier: Carrier, format_name: str, hard_fraction: float = 0.0) -> tuple[Piece, str]:
    """A fresh secret of `format_name` assigned in the carrier's syntax, and its raw value.

    With probability hard_fraction it gets a hard-case treatment (`hard.draw_case`) that suits the pair.
    """
    pool = slots.pool
    fmt = FORMATS[format_name]
    case = draw_case(pool, carrier, fmt, hard_fraction)
    planted = fmt.plant(pool)
    value = planted.text[planted.start:planted.end]
    piece = case.make(slots, carrier, fmt, planted) if case is not None else None
    if piece is not None:
        return piece, value
    embedded = carrier.embed(pool.choice(fmt.names), planted.text, slots)
    if embedded.written == planted.text:
        start, end = embedded.start + planted.start, embedded.start + planted.end
    else:  # newlines escaped: only whole-value secrets (PEM blocks) are multi-line
        start, end = embedded.start, embedded.start + len(embedded.written)
    return Piece(embedded.text, (Mark(start, end, format_name, True),)), value


def decoy_piece(slots: Slots, carrier: Carrier) -> Piece:
    """A decoy of a uniform kind, assigned in the carrier's syntax and marked as not secret."""
    pool = slots.pool
    kind = DECOYS[pool.choice(DECOY_KINDS)]
    name, value = kind.draw(pool)
    embedded = carrier.embed(name, value, slots)
    start = embedded.start
    return Piece(embedded.text, (Mark(start, start + len(embedded.written), kind.name, False),))


def _choose_secrets(slots: Slots, carrier: Carrier, frame: Frame, formats: tuple[str, ...], count: int,
                    seen: SeenValues, hard_fraction: float) -> tuple[list[Piece], list[str]]:
    """Up to `count` secrets that fit the frame together; fewer when later ones do not fit."""
    pool = slots.pool
    pieces: list[Piece] = []
    values: list[str] = []
    for _ in range(count):
        for _ in range(_TRIES_MORE if pieces else _TRIES_FIRST):
            piece, value = secret_piece(slots, carrier, pool.choice(formats), hard_fraction)
            if value in seen.secrets or value in values or not frame.fits(join(pieces + [piece])):
                continue
            pieces.append(piece)
            values.append(value)
            break
        else:
            if not pieces:
                raise _Redraw
            break
    return pieces, values


@dataclass(frozen=True)
class _Draw:
    """One candidate file before its checks: content with marks, and what its labels record."""

    content: Piece
    kind: str
    name: str
    decile: int | None
    bucket: int
    values: list[str]


def _draw_once(config: SecretDataConfig, split: str, pool: Pool, seen: SeenValues) -> _Draw:
    carrier = CARRIERS[pool.choice(config.kinds)]
    bucket = pool.choice(config.split_buckets(split))
    length = round(bucket * (1 + config.length_jitter * (2 * pool.random() - 1)))
    slots = Slots(pool)
    header, footer = carrier.header(slots), carrier.footer(slots)
    formats = config.split_formats(split)
    count = pool.between(*config.secrets_per_file) if formats else 0
    decile = pool.below(10) if count else None
    window = decile_window(length, decile) if count else (0, length)
    frame = Frame(length, len(header), len(footer), *window)
    secrets, values = (_choose_secrets(slots, carrier, frame, formats, count, seen, config.hard_fraction)
                       if count else ([], []))
    decoys = [decoy_piece(slots, carrier) for _ in range(config.decoys_per_file)]
    content = assemble(carrier, slots, frame, header, footer, secrets, decoys)
    return _Draw(content, carrier.kind, pool.choice(carrier.file_names), decile, bucket, values)


def draw_file(config: SecretDataConfig, split: str, index: int, seen: SeenValues,
              width: int = 4) -> tuple[LabelledFile, bytes]:
    """File `index` of `split`: its labels and bytes, from its own stream (seed, split, index).

    A draw is redrawn (same stream) when no secret fits its decile, when it repeats a secret value
    or a whole file already drawn, or, in train/validation, when a held-out format's published
    regex matches anywhere in it (decoys such as the AWS example key count).
    """
    pool = Pool(np.random.default_rng(np.random.SeedSequence([config.seed, SPLIT_IDS[split], index])))
    banned = [FORMATS[name].regex for name in config.heldout_formats
              if split in SEEN_SPLITS and FORMATS[name].self_identifying]
    for _ in range(_FILE_ATTEMPTS):
        try:
            draw = _draw_once(config, split, pool, seen)
        except _Redraw:
            continue
        text, marks = draw.content.text, draw.content.marks
        data = text.encode("ascii")
        digest = hashlib.sha256(data).digest()
        if digest in seen.files or any(regex.search(text) for regex in banned):
            continue
        seen.secrets.update(draw.values)
        seen.files.add(digest)
        labelled = LabelledFile(
            relpath=f"files/{index:0{width}d}_{draw.name}", kind=draw.kind, length=len(data),
            spans=tuple(sorted(Span(m.start, m.end, m.label) for m in marks if m.secret)),
            decoys=tuple(sorted(Span(m.start, m.end, m.label) for m in marks if not m.secret)),
            cases=tuple(sorted(Span(m.start, m.end, m.case) for m in marks if m.secret and m.case)),
            target_decile=draw.decile, length_bucket=draw.bucket)
        return labelled, data
    raise ConfigError(f"{split} file {index}: no usable draw in {_FILE_ATTEMPTS} attempts; length_buckets may "
                      "be too short for the formats, or heldout_formats match what train/validation files hold")


def generate_split(config: SecretDataConfig, split: str, seen: SeenValues) -> Iterator[tuple[LabelledFile, bytes]]:
    """(labels, bytes) of every file of `split`, in file order; adds their secrets and digests to `seen`.

    Per file: a carrier kind uniform over config.kinds; a length bucket uniform over
    config.split_buckets(split) and a length uniform within ±length_jitter of it; in secret-bearing
    splits, a count uniform in secrets_per_file, a target decile uniform in 0..9 and formats uniform
    over config.split_formats(split), each secret with probability hard_fraction written as a hard
    case (`hard`: split, encoded, escaped or mid-line), every span inside the decile window of the
    file. Draws that do not fit the window are rejected, so long values are rarer in short files
    (an RSA PEM block, ~1.7 KB, needs a file of ~17 KB or more) and a file holds fewer secrets when
    more do not fit.
    Then decoys_per_file decoys of uniform kinds anywhere outside the secrets. test_decoys files
    hold decoys only (target_decile None). Splits share no secret value and no file.
    """
    total = config.split_files(split)
    width = max(4, len(str(max(total - 1, 0))))
    for index in tqdm(range(total), desc=split, unit="file", dynamic_ncols=True, disable=None):
        yield draw_file(config, split, index, seen, width)
