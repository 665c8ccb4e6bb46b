"""Assembling a file of an exact length from filler, planted values and a target position.

A file is a list of pieces: header, filler blocks, planted assignments (secret or decoy), footer.
Its length is fixed first; filler is blocks that fit plus one pad of the exact remainder, so the
decile window [lo, hi) of the final file is known before anything is placed.
"""

from __future__ import annotations

from dataclasses import dataclass

from align_mamba.secrets.data.carrier import Carrier
from align_mamba.secrets.data.text import Slots

# Consecutive filler blocks that overshoot the remaining budget before the rest becomes one pad.
_BLOCK_MISSES = 3


@dataclass(frozen=True)
class Mark:
    """A planted value at text[start:end] of its piece (or file): its format or decoy kind.

    case: the hard-case treatment of a secret (`hard.HARD_CASE_NAMES`), "" for one written plainly.
    """

    start: int
    end: int
    label: str
    secret: bool
    case: str = ""

    def shifted(self, offset: int) -> Mark:
        return Mark(self.start + offset, self.end + offset, self.label, self.secret, self.case)


@dataclass(frozen=True)
class Piece:
    """Text with the values planted in it, offsets relative to the text."""

    text: str
    marks: tuple[Mark, ...] = ()


def decile_window(length: int, decile: int) -> tuple[int, int]:
    """The bytes [lo, hi) of a `length`-byte file whose relative position floor(10 * i / length) is `decile`."""
    return -(-decile * length // 10), -(-(decile + 1) * length // 10)


def join(pieces: list[Piece]) -> Piece:
    """One piece: the texts concatenated, marks shifted to their offsets in it."""
    marks, offset = [], 0
    for piece in pieces:
        marks += [mark.shifted(offset) for mark in piece.marks]
        offset += len(piece.text)
    return Piece("".join(piece.text for piece in pieces), tuple(marks))


def fill(carrier: Carrier, slots: Slots, n: int, inserts: list[Piece] = ()) -> list[Piece]:
    """Pieces of exactly n characters: filler blocks and a pad, `inserts` at random block boundaries."""
    budget = n - sum(len(piece.text) for piece in inserts)
    if budget < 0:
        raise ValueError(f"{len(inserts)} inserts need {n - budget} characters, more than {n}")
    pool = slots.pool
    blocks: list[Piece] = []
    total = misses = 0
    while misses < _BLOCK_MISSES:
        block = carrier.block(slots)
        if total + len(block) <= budget:
            blocks.append(Piece(block))
            total += len(block)
            misses = 0
        else:
            misses += 1
    blocks.insert(pool.below(len(blocks) + 1), Piece(carrier.pad(budget - total, slots)))
    for piece in inserts:
        blocks.insert(pool.below(len(blocks) + 1), piece)
    return blocks


@dataclass(frozen=True)
class Frame:
    """Where planted secrets may go in a file: the decile window, and the room the header and footer leave."""

    length: int
    header: int
    footer: int
    lo: int
    hi: int

    def value_range(self, group: Piece) -> tuple[int, int]:
        """Feasible [first, last] file offsets of the group's first value; empty when first > last."""
        first_start, last_end = group.marks[0].start, group.marks[-1].end
        extent = last_end - first_start
        first = max(self.lo, self.header + first_start)
        last = min(self.hi - extent, self.length - self.footer - len(group.text) + first_start)
        return first, last

    def fits(self, group: Piece) -> bool:
        first, last = self.value_range(group)
        return first <= last


def spread(carrier: Carrier, slots: Slots, frame: Frame, secrets: list[Piece]) -> tuple[Piece, int]:
    """The secrets as one group with filler gaps between them, and the file offset of the group.

    The total gap is uniform in what the window leaves over, cut at uniform points, and the
    group's first value lands uniformly in the offsets still feasible.
    """
    pool = slots.pool
    first, last = frame.value_range(join(secrets))
    room = last - first
    total_gap = pool.between(0, room) if len(secrets) > 1 else 0
    cuts = sorted(pool.between(0, total_gap) for _ in range(len(secrets) - 1))
    gaps = [b - a for a, b in zip([0] + cuts, cuts + [total_gap])]
    pieces = [secrets[0]]
    for gap, secret in zip(gaps, secrets[1:]):
        pieces += fill(carrier, slots, gap) + [secret]
    group = join(pieces)
    value_at = pool.between(first, last - total_gap)
    return group, value_at - group.marks[0].start


def assemble(carrier: Carrier, slots: Slots, frame: Frame, header: str, footer: str,
             secrets: list[Piece], decoys: list[Piece]) -> Piece:
    """The whole file: header, filler with decoys, the secret group (if any) inside the frame, footer.

    Each decoy goes before or after the secret group with probability proportional to the room
    left there; one that fits in neither is left out.
    """
    pool = slots.pool
    body_end = frame.length - frame.footer
    if secrets:
        group, at = spread(carrier, slots, frame, secrets)
        rooms = [at - frame.header, body_end - at - len(group.text)]
    else:
        group, rooms = None, [body_end - frame.header]
    sides: list[list[Piece]] = [[] for _ in rooms]
    left = list(rooms)
    for decoy in decoys:
        open_sides = [i for i, room in enumerate(left) if room >= len(decoy.text)]
        if not open_sides:
            continue
        weights = [left[i] for i in open_sides]
        pick = pool.random() * sum(weights)
        side = open_sides[-1]
        for i, weight in zip(open_sides, weights):
            if pick < weight:
                side = i
                break
            pick -= weight
        sides[side].append(decoy)
        left[side] -= len(decoy.text)
    parts = [Piece(header)] + fill(carrier, slots, rooms[0], sides[0])
    if group is not None:
        parts += [group] + fill(carrier, slots, rooms[1], sides[1])
    return join(parts + [Piece(footer)])
