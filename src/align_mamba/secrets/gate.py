"""A cheap candidate gate for scanning: the byte ranges of a file that could hold a secret.

The tagger costs about a microsecond per byte or more on a laptop CPU, and secrets are a sliver of a
file, so a scan first finds candidates with one regex pass and runs the model only around them
(bytes outside every region are scored "none"). A candidate is any of:

    token   a run of >= MIN_TOKEN bytes of [A-Za-z0-9+/_-%] ('%' for a URL-encoded value's %XX
            escapes; then at most two '=' of base64 padding) that mixes at least two of upper case, lower
            case and digits, or holds a literal prefix of a self-identifying format (AKIA..., ghp_,
            xoxb-, ...; an AWS key id may be all upper case). '.' and a '=' inside split tokens, so
            `module.exports.fooBar` and `NAME=value` are pieces, not one long run.
    split   quoted strings ('', "", ``) without spaces joined by `+` (`"AKIA2E3MO" + "WZ7QRSTUVWX"`, also across
            a line break or an opening parenthesis) whose pieces together are a candidate: each
            piece of a split secret may be shorter than MIN_TOKEN, and a URL cut inside its
            password loses the `://user:password@` marker.
    PEM     a `-----BEGIN` armour line (its base64 lines are tokens too).
    URL     `://user:password@` (a password may hold ~!*, which tokens do not).

Chosen from the generator's formats (secrets/data/formats.py): every value the generator draws is
at least 20 bytes of that alphabet (a PEM block, or a URL password of 12-24 bytes, are caught by
their own markers). Single-case runs (CONSTANT_NAMES, snake_case, plain words) are skipped:
they are identifiers, not keys. Each candidate is widened by `margin` bytes of context on both
sides (the tagger is bidirectional: its decision on a byte leans on the name before the value and
the quote after it) and overlapping or touching regions are merged.
"""

from __future__ import annotations

import re

from align_mamba.core.errors import ConfigError

MIN_TOKEN = 20
DEFAULT_MARGIN = 256
_TOKEN = rb"[A-Za-z0-9+/_\-%%]{%d,}={0,2}" % MIN_TOKEN
_MARKERS = rb"-----BEGIN|://[^\s/@:]+:[^\s/@]+@"
# A quote cannot start a token, so at a quote this is the only alternative that can match; when its
# pieces fail the test, each of them alone would have failed it too (the join holds every piece).
_SPLIT = rb"""["'`][^"'`\s]+["'`](?:\s*\+\s*\(?\s*["'`][^"'`\s]+["'`]?)+"""
CANDIDATE = re.compile(_TOKEN + rb"|" + _MARKERS + rb"|" + _SPLIT)
_PIECE = re.compile(rb"""["'`]([^"'`\s]+)""")
# Literal openings of the self-identifying formats (formats.FORMATS regexes): a token holding one is
# a candidate even when single-case (AKIA + 16 of [A-Z2-7] has no digit once in ~28 draws).
PREFIXES = re.compile(rb"AKIA|ASIA|A3T|ABIA|ACCA|ghp_|github_pat_|glpat-|xox[bpe]-|[sr]k_(?:live|test|prod)_|AIza|eyJ")
_UPPER, _LOWER, _DIGIT = re.compile(rb"[A-Z]"), re.compile(rb"[a-z]"), re.compile(rb"[0-9]")


def is_candidate(match: bytes) -> bool:
    """Whether one CANDIDATE match could be (or mark) a secret: a marker, a mixed token or a known prefix."""
    if match.startswith((b"-----", b"://")):
        return True
    if match.startswith((b'"', b"'", b"`")):
        joined = b"".join(_PIECE.findall(match))
        return len(joined) >= MIN_TOKEN and is_candidate(joined)
    classes = sum(pattern.search(match) is not None for pattern in (_UPPER, _LOWER, _DIGIT))
    return classes >= 2 or PREFIXES.search(match) is not None


def candidate_spans(data: bytes) -> list[tuple[int, int]]:
    """Half-open (start, end) of every candidate in `data`, in order (may touch, never overlap)."""
    return [m.span() for m in CANDIDATE.finditer(data) if is_candidate(m.group())]


def merge_regions(spans: list[tuple[int, int]], margin: int, length: int) -> list[tuple[int, int]]:
    """`spans` (sorted by start) widened by `margin` on each side, clipped to [0, length), and merged
    where they overlap or touch: sorted, disjoint regions with at least one byte between two."""
    regions: list[tuple[int, int]] = []
    for start, end in spans:
        start, end = max(0, start - margin), min(length, end + margin)
        if regions and start <= regions[-1][1]:
            regions[-1] = (regions[-1][0], max(regions[-1][1], end))
        else:
            regions.append((start, end))
    return regions


def candidate_regions(data: bytes, margin: int = DEFAULT_MARGIN) -> list[tuple[int, int]]:
    """The regions of `data` the tagger must read: candidates with `margin` bytes of context, merged."""
    if margin < 0:
        raise ConfigError(f"margin must be >= 0, got {margin}")
    return merge_regions(candidate_spans(data), margin, len(data))
