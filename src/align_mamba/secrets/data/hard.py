r"""Hard cases: a planted secret written the way that trips scanners, its mask still exactly its bytes.

With probability SecretDataConfig.hard_fraction a planted secret gets one treatment, uniform over
the treatments that suit its carrier and format (`HardCase.applies`):

    concat       the literal cut in two and joined by the language's `+` (source code only), on one
                 line (`"AKIA2E3MO" + "WZ7QRSTUVWX"`) or across a line break
    base64       the value base64-encoded, as Kubernetes secrets and CI variables hold values
    url_encoded  the value percent-encoded as a URL's query parameter (`glpat%2DAb...`)
    json_pem     a PEM private key JSON-escaped on one line inside a service-account object
    minified     the assignment in the middle of one line of thousands of bytes of short statements

The mask covers the secret's bytes as the file holds them, nothing else: both pieces of a split
literal (two spans of the one format; the quotes and ` + ` between them are not secret), the whole
encoded text, the escaped key from `-----BEGIN` to `KEY-----` with its `\n` escapes. Every such
span is also listed in its file's `LabelledFile.cases` under the treatment's name.

Two spans for a split literal keep the scorer as it is: each piece is a true span matched one-to-one
at IoU >= 0.5 (`score.match_spans`); one span over both pieces would label the ` + ` as secret, and
a tagger finding both pieces exactly would score IoU < 0.5 on it. A split secret counts twice in
span recall, once per piece, which is what a scanner has to find.

The realised share of treated secrets is below hard_fraction: some pairs have no treatment (a URL
password in an .env file), url_encoded leaves a value of letters and digits only as it is, and a
treated assignment that does not fit the file's target decile (a long minified line in a 1 KB file)
is drawn again, plain or not. The manifest counts the treated spans per split.
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable
from dataclasses import dataclass

from align_mamba.secrets.data.carrier import Carrier, Concat, Inline
from align_mamba.secrets.data.formats import Planted, SecretFormat
from align_mamba.secrets.data.layout import Mark, Piece
from align_mamba.secrets.data.text import FIRST_NAMES, WORDS, Pool, Slots

# Each piece of a split literal keeps at least this many bytes of the secret.
MIN_PIECE = 4
# Bytes of short statements around a value planted in a minified line.
MIN_LINE, MAX_LINE = 1500, 3000
_ALNUM = frozenset(string.ascii_letters + string.digits)
_URL_NAMES = ("callback_url", "redirect_uri", "download_url", "endpoint_url", "request_url")
_URL_PARAMS = ("token", "access_token", "api_key", "key", "auth")


@dataclass(frozen=True)
class HardCase:
    """One treatment: whether it suits a (carrier, format) pair, and the piece it writes.

    make returns the assignment as a Piece whose marks are the secret's spans (label: the format,
    case: this name), or None when the treatment would leave the value as it is.
    """

    name: str
    applies: Callable[[Carrier, SecretFormat], bool]
    make: Callable[[Slots, Carrier, SecretFormat, Planted], Piece | None]


def _marks(fmt: SecretFormat, case: str, *ranges: tuple[int, int]) -> tuple[Mark, ...]:
    return tuple(Mark(start, end, fmt.name, True, case) for start, end in ranges)


def split_literal(opening: str, text: str, cut: int, closing: str, concat: Concat) -> tuple[str, int, int]:
    """`text` written as two literals cut before text[cut]: (literal, offset of text[0], offset of text[cut]).

    Worked example: split_literal('"', "AKIA2E3MOWZ7QRSTUVWX", 9, '"', Concat("", " + ", "")) is
    ('"AKIA2E3MO" + "WZ7QRSTUVWX"', 1, 15): the first piece starts after the quote, the second
    after `" + "`.
    """
    first = concat.open + opening
    second = first + text[:cut] + closing + concat.joiner + opening
    return second + text[cut:] + closing + concat.close, len(first), len(second)


def concat_piece(slots: Slots, carrier: Carrier, fmt: SecretFormat, planted: Planted) -> Piece:
    """The value's literal cut inside the secret and joined with the carrier's `+`: two marks, one per piece.

    Worked example (Python, a 20-byte AWS key id cut after 9 bytes, the one-line join)::

        API_KEY = "AKIA2E3MO" + "WZ7QRSTUVWX"\n
        marks [11, 20) and [25, 36): "AKIA2E3MO" and "WZ7QRSTUVWX", not the quotes or ` + `

    The line-break join is `("AKIA2E3MO" +\n    "WZ7QRSTUVWX")` in Python (parentheses: a `+` ending
    a line is a syntax error there), `"..." +\n  "..."` in JavaScript and Go.
    """
    pool = slots.pool
    opening, written, closing = carrier.literal(planted.text, slots)
    cut = pool.between(planted.start + MIN_PIECE, planted.end - MIN_PIECE)
    literal, first, second = split_literal(opening, written, cut, closing, pool.choice(carrier.concat))
    head, tail = carrier.around(pool.choice(fmt.names), slots)
    at = len(head)
    return Piece(head + literal + tail, _marks(fmt, "concat", (at + first + planted.start, at + first + cut),
                                               (at + second, at + second + planted.end - cut)))


def _embedded(slots: Slots, carrier: Carrier, name: str, planted: Planted, fmt: SecretFormat, case: str) -> Piece:
    """`planted.text` assigned to `name` in the carrier's syntax, the secret at planted.start:end marked."""
    embedded = carrier.embed(name, planted.text, slots)
    start = embedded.start + planted.start
    return Piece(embedded.text, _marks(fmt, case, (start, start + planted.end - planted.start)))


def base64_piece(slots: Slots, carrier: Carrier, fmt: SecretFormat, planted: Planted) -> Piece:
    """The value base64-encoded (standard alphabet, padded), under its name or the name + _b64 / _base64.

    Worked example (.env, an AWS key id)::

        AWS_ACCESS_KEY_ID_B64=QUtJQTJFM01PV1o3UVJTVFVWV1g=\n
        mark [22, 50): the whole base64 text, 28 bytes for the key's 20
    """
    encoded = base64.b64encode(planted.text.encode("ascii")).decode("ascii")
    name = slots.pool.choice(fmt.names) + slots.pool.choice(("", "_b64", "_base64"))
    return _embedded(slots, carrier, name, Planted(encoded, 0, len(encoded)), fmt, "base64")


def percent_encode(value: str) -> str:
    """Every character but ASCII letters and digits as %XX (upper-case hex of its byte).

    Worked example: percent_encode("glpat-Ab_9.x") is "glpat%2DAb%5F9%2Ex".
    """
    return "".join(c if c in _ALNUM else f"%{ord(c):02X}" for c in value)


def url_encoded_piece(slots: Slots, carrier: Carrier, fmt: SecretFormat, planted: Planted) -> Piece | None:
    """The value percent-encoded as a query parameter of a URL; None for a value of letters and digits only.

    Worked example (YAML, a GitLab token glpat-Ab_9... of 26 bytes)::

        callback_url: "https://cache-feed.internal/hook?token=glpat%2DAb%5F9...&page=3"\n
        mark: from `glpat` to the parameter's end, the encoded value only (not `token=`, not `&page=3`)
    """
    encoded = percent_encode(planted.text)
    if encoded == planted.text:
        return None
    pool = slots.pool
    head = slots.render("https://{host}/{word}?") + pool.choice(_URL_PARAMS) + "="
    tail = slots.render("&{word}={num}") if pool.below(2) else ""
    url = Planted(head + encoded + tail, len(head), len(head) + len(encoded))
    return _embedded(slots, carrier, pool.choice(_URL_NAMES), url, fmt, "url_encoded")


def json_escaped_pem(block: str, project: str, email: str) -> Planted:
    r"""A one-line service-account JSON object holding `block` JSON-escaped; the secret is the escaped block.

    Worked example: json_escaped_pem("-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----",
    "demo", "ci@demo.example.com") has the text (one line, wrapped here)

        {"type": "service_account", "project_id": "demo", "private_key": "-----BEGIN EC PRIVATE KEY-----
        \nMHcC\n-----END EC PRIVATE KEY-----\n", "client_email": "ci@demo.example.com"}

    with a backslash and an `n` for each newline (as Google's key files hold it, a trailing one too);
    the secret is from `-----BEGIN` to `KEY-----`, text[66:132], without the trailing `\n`.
    """
    escaped = json.dumps(block)[1:-1]
    fields = {"type": "service_account", "project_id": project, "private_key": block + "\n", "client_email": email}
    text = json.dumps(fields)
    start = text.index(escaped)
    return Planted(text, start, start + len(escaped))


def json_pem_piece(slots: Slots, carrier: Carrier, fmt: SecretFormat, planted: Planted) -> Piece:
    """A PEM key JSON-escaped in a service-account object (`json_escaped_pem`), assigned as one value."""
    pool = slots.pool
    project = f"{pool.choice(WORDS)}-{pool.choice(WORDS)}-{pool.between(100, 999)}"
    email = f"{pool.choice(FIRST_NAMES)}@{project}.example.com"
    name = pool.choice(("credentials", "service_account", "google_credentials", "gcp_key_json"))
    return _embedded(slots, carrier, name, json_escaped_pem(planted.text, project, email), fmt, "json_pem")


def _items(slots: Slots, inline: Inline, n: int) -> list[str]:
    """Short statements of the inline syntax, at least n bytes of them (none for n = 0)."""
    items: list[str] = []
    total = 0
    while total < n:
        items.append(slots.render(slots.pool.choice(inline.items)))
        total += len(items[-1]) + len(inline.sep)
    return items


def minified_piece(slots: Slots, carrier: Carrier, fmt: SecretFormat, planted: Planted) -> Piece:
    """The assignment among MIN_LINE..MAX_LINE bytes of short statements on one line, at a uniform point.

    Worked example (Python; a real line holds thousands of bytes)::

        batch=3;cache="feed";API_KEY="AKIA2E3MOWZ7QRSTUVWX";job=[4, 9]\n
        mark [30, 50): the value alone, as in a plain assignment
    """
    pool = slots.pool
    inline = carrier.inline
    length = pool.between(MIN_LINE, MAX_LINE)
    before = pool.between(0, length)
    opening, written, closing = carrier.literal(planted.text, slots)
    head, tail = carrier.around(pool.choice(fmt.names), slots, inline.assign)
    left, right = _items(slots, inline, before), _items(slots, inline, length - before)
    prefix = slots.render(inline.open) + "".join(item + inline.sep for item in left) + head + opening
    text = (prefix + written + closing + tail + "".join(inline.sep + item for item in right)
            + slots.render(inline.close))
    start = len(prefix) + planted.start
    return Piece(text, _marks(fmt, "minified", (start, start + planted.end - planted.start)))


HARD_CASES: dict[str, HardCase] = {case.name: case for case in (
    HardCase("concat", lambda carrier, fmt: bool(carrier.concat) and not fmt.multiline, concat_piece),
    HardCase("base64", lambda carrier, fmt: fmt.wrap is None, base64_piece),
    HardCase("url_encoded", lambda carrier, fmt: fmt.wrap is None and not fmt.multiline, url_encoded_piece),
    HardCase("json_pem", lambda carrier, fmt: fmt.multiline, json_pem_piece),
    HardCase("minified", lambda carrier, fmt: carrier.inline is not None and not fmt.multiline, minified_piece),
)}
HARD_CASE_NAMES: tuple[str, ...] = tuple(HARD_CASES)


def draw_case(pool: Pool, carrier: Carrier, fmt: SecretFormat, fraction: float) -> HardCase | None:
    """With probability `fraction` a treatment uniform over those that suit (carrier, format), else None.

    Fraction 0 spends no random draw: with the same formats, the files are byte for byte those the
    generator wrote before hard cases existed (checked once against that commit).
    """
    if fraction <= 0 or pool.random() >= fraction:
        return None
    fitting = [case for case in HARD_CASES.values() if case.applies(carrier, fmt)]
    return pool.choice(fitting) if fitting else None
