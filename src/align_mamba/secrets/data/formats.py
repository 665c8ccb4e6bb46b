"""Secret formats: a generator of synthetic values with the real shape, beside the published regex.

Regexes are the scanners' own: gitleaks rules (config/gitleaks.toml, v8) where gitleaks has one,
detect-secrets' BasicAuthDetector for passwords in URLs, and gitleaks' semi-generic template
(keyword, assignment operator, value) for the AWS secret key, which gitleaks has no default rule
for. A regex's `secret` group, when it has one, is the value; otherwise the whole match is.
`value_regex` fullmatches the value alone (the labelled span) and is what tests check every draw
against. Every value comes from the rng: none is, or is derived from, a real credential.
"""

from __future__ import annotations

import base64
import json
import re
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from align_mamba.secrets.data.pem import private_key_block
from align_mamba.secrets.data.text import (BASE62, BASE64URL, FIRST_NAMES, HEX, LAST_NAMES, PORTS,
                                           SCHEMES, TLDS, WORDS, Pool, as_pool)

_UPPER_DIGITS = string.ascii_uppercase + string.digits
_AWS_ID_CHARS = string.ascii_uppercase + "234567"
_PASSWORD_CHARS = BASE62 + "-_.~!*"
# gitleaks' end-of-value guard: a quote, backtick, space, semicolon, an escaped newline, or the end.
_TAIL = r"""(?:[\x60'"\s;]|\\[nr]|$)"""


def _semi_generic(keywords: str, secret: str) -> str:
    """gitleaks' template for `<name containing a keyword> <operator> <value>` rules."""
    return (r"(?i)[\w.-]{0,50}?(?:" + keywords + r")(?:[ \t\w.-]{0,20})[\s'" + '"' + r"]{0,3}"
            r"(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)[\x60'" + '"' + r"\s=]{0,5}(?P<secret>" + secret + ")" + _TAIL)


_OPENAI = (r"\b(?P<secret>sk-(?:proj|svcacct|admin)-(?:[A-Za-z0-9_-]{74}|[A-Za-z0-9_-]{58})T3BlbkFJ"
           r"(?:[A-Za-z0-9_-]{74}|[A-Za-z0-9_-]{58})\b|sk-[a-zA-Z0-9]{20}T3BlbkFJ[a-zA-Z0-9]{20})" + _TAIL)
_PRIVATE_KEY = r"(?i)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S-]{64,}?KEY(?: BLOCK)?-----"
GENERIC_REGEX = _semi_generic(r"access|auth|(?-i:[Aa]pi|API)|credential|creds|key|passw(?:or)?d|secret|token",
                              r"[\w.=-]{10,150}|[a-z0-9][a-z0-9+/]{11,}={0,3}")


@dataclass(frozen=True)
class Planted:
    """A value as a carrier embeds it: `text`, with the secret at text[start:end]."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class SecretFormat:
    """One secret format.

    regex: the published pattern (compiled); value_regex: fullmatches the labelled value alone;
    source: where the regex comes from; names: snake_case variable names it is assigned to;
    self_identifying: the regex finds the format without any context, so raw bytes can be scanned
    for it (generic shapes cannot be); multiline: the value spans lines (PEM blocks).
    """

    name: str
    regex: re.Pattern
    value_regex: re.Pattern
    source: str
    names: tuple[str, ...]
    make: Callable[[Pool], str]
    wrap: Callable[[Pool, str], Planted] | None = None
    self_identifying: bool = True
    multiline: bool = False

    def generate(self, rng: np.random.Generator | Pool) -> str:
        """One synthetic secret value (the bytes a span labels)."""
        return self.make(as_pool(rng))

    def plant(self, pool: Pool) -> Planted:
        """A fresh value in its surrounding text (a URL around a password, JSON around a secret)."""
        value = self.make(pool)
        return self.wrap(pool, value) if self.wrap else Planted(value, 0, len(value))


def secret_span(match: re.Match) -> tuple[int, int]:
    """(start, end) of the value in a match of a format's published regex."""
    return match.span("secret") if "secret" in match.re.groupindex else match.span()


def base62(number: int) -> str:
    """`number` in base 62 with digits 0-9A-Za-z (the alphabet GitHub's token checksum uses)."""
    digits = ""
    while True:
        number, rest = divmod(number, 62)
        digits = BASE62[rest] + digits
        if number == 0:
            return digits


def github_checksum(body: str) -> str:
    """The 6-character tail of a GitHub token: base62(crc32(body)), left-padded with '0'."""
    return base62(zlib.crc32(body.encode("ascii"))).rjust(6, "0")


def _digits(pool: Pool, low: int, high: int) -> str:
    n = pool.between(low, high)
    return str(pool.between(1, 9)) + pool.chars(string.digits, n - 1)


def _high_entropy(pool: Pool) -> str:
    """What generic credentials look like: base62, lowercase hex (32/40/64) or url-safe base64."""
    shape = pool.below(3)
    if shape == 0:
        return pool.chars(BASE62, pool.between(24, 48))
    if shape == 1:
        return pool.chars(HEX, pool.choice((32, 40, 64)))
    return pool.chars(BASE62, 1) + pool.chars(BASE64URL, pool.between(31, 43))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Headers whose base64url has no '-' or '_', as gitleaks' jwt rule requires of the first part.
_JWT_HEADERS = ({"alg": "HS256", "typ": "JWT"}, {"alg": "RS256", "typ": "JWT"},
                {"alg": "ES256", "typ": "JWT"}, {"alg": "HS512", "typ": "JWT"})
_JWT_SIGNATURE_BYTES = {"HS256": 32, "RS256": 256, "ES256": 64, "HS512": 64}


def _jwt(pool: Pool) -> str:
    header = pool.choice(_JWT_HEADERS)
    issued = pool.between(1_600_000_000, 1_750_000_000)
    name = f"{pool.choice(FIRST_NAMES).capitalize()} {pool.choice(LAST_NAMES).capitalize()}"
    payload = {"sub": _digits(pool, 6, 10), "name": name, "iat": issued,
               "exp": issued + pool.choice((900, 3600, 86400))}
    if pool.below(2):
        payload["role"] = pool.choice(("admin", "editor", "viewer", "service"))
    parts = [json.dumps(part, separators=(",", ":")).encode("ascii") for part in (header, payload)]
    signature = pool.bytes(_JWT_SIGNATURE_BYTES[header["alg"]])
    return ".".join([_b64url(parts[0]), _b64url(parts[1]), _b64url(signature)])


def _github_classic(pool: Pool) -> str:
    body = pool.chars(BASE62, 30)
    return "ghp_" + body + github_checksum(body)


def _github_oauth(pool: Pool) -> str:
    body = pool.chars(BASE62, 30)
    return "gho_" + body + github_checksum(body)


def _openai_project(pool: Pool) -> str:
    """`sk-proj-`, two halves of 58 or 74 url-safe characters around `T3BlbkFJ` (base64 of "OpenAI").

    The last character is alphanumeric: gitleaks' rule wants a word boundary after the second half.
    """
    half = pool.choice((58, 74))
    return ("sk-proj-" + pool.chars(BASE64URL, half) + "T3BlbkFJ" + pool.chars(BASE64URL, half - 1)
            + pool.chars(BASE62, 1))


def _url_with_password(pool: Pool, password: str) -> Planted:
    scheme = pool.choice(SCHEMES)
    user = pool.choice(FIRST_NAMES + WORDS)
    host = f"{pool.choice(WORDS)}-{pool.choice(('db', 'primary', 'cache', 'mq', 'git'))}.{pool.choice(TLDS)}"
    head = f"{scheme}://{user}:"
    tail = f"@{host}:{pool.choice(PORTS)}/{pool.choice(WORDS)}"
    return Planted(head + password + tail, len(head), len(head) + len(password))


_JSON_SECRET_KEYS = ("client_secret", "api_key", "private_key_id", "refresh_token", "secret", "access_token")


def _json_object(pool: Pool, value: str) -> Planted:
    """A small credentials object, e.g. {"type": "service_account", ..., "client_secret": "<value>"}."""
    fields = {"type": pool.choice(("service_account", "authorized_user", "oauth_client")),
              "project_id": f"{pool.choice(WORDS)}-{pool.choice(WORDS)}-{pool.between(100, 999)}"}
    if pool.below(2):
        fields["client_email"] = f"{pool.choice(WORDS)}@{pool.choice(WORDS)}.example.com"
    key = pool.choice(_JSON_SECRET_KEYS)
    head = json.dumps(fields)[:-1] + f', "{key}": "'
    return Planted(head + value + '"}', len(head), len(head) + len(value))


def _format(name: str, regex: str, value_regex: str, source: str, names: tuple[str, ...],
            make: Callable[[Pool], str], **options) -> SecretFormat:
    return SecretFormat(name, re.compile(regex), re.compile(value_regex), source, names, make, **options)


_GITHUB_NAMES = ("github_token", "gh_token", "github_pat", "gh_pat")

FORMATS: dict[str, SecretFormat] = {f.name: f for f in (
    _format("aws_access_key_id", r"\b(?P<secret>(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
            r"AKIA[A-Z2-7]{16}", "gitleaks aws-access-token", ("aws_access_key_id", "aws_access_key"),
            lambda p: "AKIA" + p.chars(_AWS_ID_CHARS, 16)),
    _format("aws_secret_access_key", _semi_generic("aws", r"[a-z0-9/+]{40}"), r"[A-Za-z0-9/+]{40}",
            "gitleaks semi-generic template, keyword aws", ("aws_secret_access_key", "aws_secret_key"),
            lambda p: p.chars(BASE62 + "+/", 40)),
    _format("github_classic", r"ghp_[0-9a-zA-Z]{36}", r"ghp_[0-9a-zA-Z]{36}", "gitleaks github-pat",
            _GITHUB_NAMES, _github_classic),
    _format("github_fine_grained", r"github_pat_\w{82}", r"github_pat_\w{82}", "gitleaks github-fine-grained-pat",
            _GITHUB_NAMES, lambda p: "github_pat_11" + p.chars(_UPPER_DIGITS, 20) + "_" + p.chars(BASE62, 59)),
    _format("github_oauth", r"gho_[0-9a-zA-Z]{36}", r"gho_[0-9a-zA-Z]{36}", "gitleaks github-oauth",
            ("github_oauth_token", "gh_oauth_token", "oauth_token"), _github_oauth),
    _format("gitlab_pat", r"glpat-[\w-]{20}", r"glpat-[\w-]{20}", "gitleaks gitlab-pat",
            ("gitlab_token", "gitlab_pat", "gl_token"), lambda p: "glpat-" + p.chars(BASE62 + "-_", 20)),
    _format("slack_bot", r"xoxb-[0-9]{10,13}-[0-9]{10,13}[a-zA-Z0-9-]*", r"xoxb-[0-9]{10,13}-[0-9]{10,13}[a-zA-Z0-9-]*",
            "gitleaks slack-bot-token", ("slack_bot_token", "slack_token", "bot_token"),
            lambda p: f"xoxb-{_digits(p, 10, 13)}-{_digits(p, 10, 13)}-{p.chars(BASE62, 24)}"),
    _format("slack_user", r"xox[pe](?:-[0-9]{10,13}){3}-[a-zA-Z0-9-]{28,34}",
            r"xox[pe](?:-[0-9]{10,13}){3}-[a-zA-Z0-9-]{28,34}", "gitleaks slack-user-token",
            ("slack_user_token", "slack_oauth_token"),
            lambda p: "xoxp-" + "-".join(_digits(p, 10, 13) for _ in range(3)) + "-" + p.chars(HEX, 32)),
    _format("slack_webhook", r"(?:https?://)?hooks.slack.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
            r"https://hooks\.slack\.com/services/T[A-Z0-9]{8,10}/B[A-Z0-9]{8,10}/[A-Za-z0-9]{24}",
            "gitleaks slack-webhook-url", ("slack_webhook_url", "webhook_url", "alerts_webhook"),
            lambda p: (f"https://hooks.slack.com/services/T{p.chars(_UPPER_DIGITS, p.choice((8, 10)))}"
                       f"/B{p.chars(_UPPER_DIGITS, p.choice((8, 10)))}/{p.chars(BASE62, 24)}")),
    _format("stripe_live", r"\b(?P<secret>(?:sk|rk)_(?:test|live|prod)_[a-zA-Z0-9]{10,99})" + _TAIL,
            r"sk_live_[0-9a-zA-Z]{24,99}", "gitleaks stripe-access-token",
            ("stripe_secret_key", "stripe_api_key", "stripe_key"),
            lambda p: "sk_live_" + p.chars(BASE62, p.choice((24, 99)))),
    _format("openai_project", _OPENAI, r"sk-proj-(?:[\w-]{58}T3BlbkFJ[\w-]{58}|[\w-]{74}T3BlbkFJ[\w-]{74})",
            "gitleaks openai-api-key", ("openai_api_key", "openai_key", "llm_api_key"), _openai_project),
    _format("anthropic_api", r"\b(?P<secret>sk-ant-api03-[a-zA-Z0-9_\-]{93}AA)" + _TAIL,
            r"sk-ant-api03-[\w-]{93}AA", "gitleaks anthropic-api-key", ("anthropic_api_key", "claude_api_key"),
            lambda p: "sk-ant-api03-" + p.chars(BASE64URL, 93) + "AA"),
    _format("google_api_key", r"\b(?P<secret>AIza[\w-]{35})" + _TAIL, r"AIza[\w-]{35}", "gitleaks gcp-api-key",
            ("google_api_key", "maps_api_key", "firebase_api_key", "gcp_api_key"),
            lambda p: "AIzaSy" + p.chars(BASE62 + "-_", 33)),
    _format("jwt", r"\b(?P<secret>ey[a-zA-Z0-9]{17,}\.ey[a-zA-Z0-9\/\\_-]{17,}\.(?:[a-zA-Z0-9\/\\_-]{10,}={0,2})?)"
            + _TAIL, r"ey[a-zA-Z0-9]{17,}\.ey[a-zA-Z0-9/\\_-]{17,}\.[a-zA-Z0-9/\\_-]{10,}={0,2}", "gitleaks jwt",
            ("auth_token", "id_token", "jwt", "bearer_token", "session_token"), _jwt),
    _format("pem_private_key", _PRIVATE_KEY, _PRIVATE_KEY, "gitleaks private-key",
            ("private_key", "ssh_private_key", "tls_key", "signing_key"), private_key_block, multiline=True),
    _format("password_in_url", r"://[^:/?#\[\]@\s]+:(?P<secret>[^:/?#\[\]@\s]+)@", r"[^:/?#\[\]@\s]+",
            "detect-secrets BasicAuthDetector", ("database_url", "redis_url", "broker_url", "mongo_uri", "repo_url"),
            lambda p: p.chars(_PASSWORD_CHARS, p.between(12, 24)), wrap=_url_with_password),
    _format("generic_assignment", GENERIC_REGEX, r"[\w.=-]{10,150}", "gitleaks generic-api-key",
            ("api_key", "secret_key", "auth_token", "access_token", "client_secret", "app_secret",
             "signing_secret", "api_token", "db_password", "admin_password", "encryption_key"),
            _high_entropy, self_identifying=False),
    _format("json_secret", GENERIC_REGEX, r"[\w.=-]{10,150}", "gitleaks generic-api-key (inside JSON)",
            ("credentials", "oauth_client", "service_account", "client_config"),
            _high_entropy, wrap=_json_object, self_identifying=False),
)}
FORMAT_NAMES: tuple[str, ...] = tuple(sorted(FORMATS))
