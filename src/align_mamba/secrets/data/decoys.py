"""Decoys: strings that look like secrets to a scanner (or a careless tagger) but are not.

Each is planted like a secret, as the value of a plausibly named variable, and recorded in a
file's `decoys` with its kind; it is never labelled. Several are exactly the shapes the published
regexes accept (the AWS documentation key, a masked `ghp_xxx...`), which is the point.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from align_mamba.secrets.data.text import HEX, Pool, as_pool

# AWS's documentation example credentials (docs.aws.amazon.com): public and inert, marked EXAMPLE.
EXAMPLE_AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@dataclass(frozen=True)
class DecoyKind:
    """One kind of look-alike: the variable names it is assigned to and a generator of its value.

    `pair` replaces the two when the name depends on the value (the AWS example id vs its secret).
    """

    name: str
    names: tuple[str, ...]
    value: Callable[[Pool], str] | None = None
    pair: Callable[[Pool], tuple[str, str]] | None = None

    def draw(self, pool: Pool) -> tuple[str, str]:
        """(variable name, value)."""
        if self.pair is not None:
            return self.pair(pool)
        return pool.choice(self.names), self.value(pool)

    def generate(self, rng: np.random.Generator | Pool) -> str:
        return self.draw(as_pool(rng))[1]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _uuid4(pool: Pool) -> str:
    return str(uuid.UUID(bytes=pool.bytes(16), version=4))


_MASKED = (("github_token", lambda p: "ghp_" + "x" * 36), ("github_token", lambda p: "ghp_" + "*" * 36),
           ("api_key", lambda p: "*" * p.between(8, 32)), ("stripe_secret_key", lambda p: "sk_live_" + "*" * 24),
           ("slack_bot_token", lambda p: "xoxb-****-****-" + "*" * 12),
           ("aws_access_key_id", lambda p: "AKIA" + "*" * 16),
           ("db_password", lambda p: "********"))
_PLACEHOLDERS = ("${DB_PASSWORD}", "${API_KEY}", "${SECRET_KEY}", "<YOUR_PASSWORD>", "<YOUR_API_KEY>",
                 "changeme", "your-api-key-here", "TODO", "{{ vault_password }}", "%(password)s")


def _masked(pool: Pool) -> tuple[str, str]:
    name, value = pool.choice(_MASKED)
    return name, value(pool)


def _example_aws(pool: Pool) -> tuple[str, str]:
    if pool.below(2):
        return "aws_access_key_id", EXAMPLE_AWS_KEY_ID
    return "aws_secret_access_key", EXAMPLE_AWS_SECRET


DECOYS: dict[str, DecoyKind] = {d.name: d for d in (
    DecoyKind("git_sha", ("commit", "revision", "git_sha", "build_commit", "source_ref"), lambda p: p.chars(HEX, 40)),
    DecoyKind("uuid", ("request_id", "tenant_id", "trace_id", "installation_id", "device_id"), _uuid4),
    DecoyKind("md5", ("checksum", "etag", "md5sum", "file_md5"), lambda p: p.chars(HEX, 32)),
    DecoyKind("sha256", ("sha256", "digest", "content_sha256", "archive_checksum"), lambda p: p.chars(HEX, 64)),
    DecoyKind("sri_sha512", ("integrity",), lambda p: "sha512-" + _b64(p.bytes(64))),
    DecoyKind("data_uri_base64", ("icon", "logo", "favicon", "avatar_fallback"),
              lambda p: "data:image/png;base64," + _b64(_PNG_SIGNATURE + p.bytes(p.between(24, 120)))),
    DecoyKind("masked_token", tuple(sorted({name for name, _ in _MASKED})), pair=_masked),
    DecoyKind("example_aws_key", ("aws_access_key_id", "aws_secret_access_key"), pair=_example_aws),
    DecoyKind("placeholder", ("password", "api_key", "db_password", "secret", "auth_token"),
              lambda p: p.choice(_PLACEHOLDERS)),
    DecoyKind("base64_nonce", ("nonce", "csp_nonce", "request_nonce", "iv"),
              lambda p: _b64(p.bytes(p.choice((16, 24, 32))))),
)}
DECOY_KINDS: tuple[str, ...] = tuple(DECOYS)
