"""Deterministic text material for carrier files: a buffered random pool, word lists and template slots.

Filler text is low-entropy on purpose: words, small numbers, versions, paths and timestamps, never
random hex or base64, so the only high-entropy strings in a file are the planted secrets and the
recorded decoys. The word lists avoid the keywords that secret scanners anchor on (key, secret,
token, passw, auth, access, api, cred), so filler never reads as an assignment of a credential.
"""

from __future__ import annotations

import string

import numpy as np

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
HEX = "0123456789abcdef"
BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

WORDS = (
    "account", "active", "address", "admin", "agent", "alert", "app", "archive", "asset", "audit",
    "backup", "balance", "batch", "billing", "blob", "board", "bucket", "buffer", "build", "bundle",
    "cache", "campaign", "cart", "catalog", "channel", "chart", "check", "client", "cluster", "column",
    "comment", "config", "context", "count", "country", "course", "cron", "customer", "daily", "data",
    "debug", "fallback", "delay", "delivery", "deploy", "detail", "device", "digest", "domain", "draft",
    "email", "engine", "entry", "event", "exporter", "feature", "feed", "field", "file", "filter", "flag",
    "format", "frame", "gateway", "graph", "group", "handler", "health", "history", "host", "image",
    "importer", "index", "input", "invoice", "item", "job", "label", "layout", "limit", "link", "list",
    "loader", "local", "locale", "lookup", "mail", "manager", "margin", "media", "member", "message",
    "metric", "mode", "model", "module", "monitor", "name", "node", "notice", "offset", "order",
    "output", "owner", "page", "panel", "parser", "path", "payload", "payment", "peer", "plan",
    "plugin", "policy", "pool", "port", "post", "preview", "price", "primary", "profile", "project",
    "proxy", "queue", "quota", "rate", "reader", "record", "region", "release", "remote", "render",
    "report", "request", "resource", "result", "retry", "review", "role", "route", "rule", "runner",
    "sample", "schema", "scope", "search", "server", "service", "session", "setting", "shard", "share",
    "shipping", "size", "slot", "source", "stage", "state", "status", "step", "storage", "store",
    "stream", "style", "summary", "sync", "table", "target", "task", "team", "template", "tenant",
    "theme", "thread", "timeout", "timer", "topic", "total", "trace", "tracker", "update", "upload",
    "user", "value", "version", "view", "volume", "worker", "zone",
)
PROSE = (
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "before",
    "build", "by", "can", "change", "check", "code", "command", "copy", "create", "current", "data",
    "default", "each", "example", "file", "first", "follow", "for", "from", "guide", "has", "how",
    "if", "in", "install", "is", "it", "later", "line", "local", "make", "more", "must", "new", "next",
    "not", "note", "now", "of", "on", "once", "only", "or", "other", "output", "page", "please",
    "project", "read", "release", "run", "same", "see", "server", "set", "setup", "should", "so",
    "start", "step", "support", "test", "that", "the", "then", "this", "to", "update", "use", "user",
    "using", "version", "when", "which", "will", "with", "without", "you", "your",
)
FIRST_NAMES = ("alice", "bruno", "chen", "dana", "emil", "farah", "greta", "hiro", "ines", "jonas",
               "kemal", "lena", "maya", "nadia", "omar", "priya", "rosa", "sven", "tara", "yusuf")
LAST_NAMES = ("berg", "costa", "dubois", "eriksen", "fischer", "garcia", "haddad", "ivanova", "jensen",
              "kowalski", "larsen", "moreau", "novak", "okafor", "petrov", "rossi", "santos", "tanaka")
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH")
STATUSES = ("200", "200", "200", "201", "204", "301", "304", "400", "404", "500", "503")
PORTS = ("80", "443", "3000", "5000", "5432", "6379", "8000", "8080", "8443", "9090", "27017")
SCHEMES = ("postgres", "postgresql", "mysql", "redis", "mongodb", "amqp", "https", "ftp")
TLDS = ("internal", "local", "example.com", "example.org", "svc.cluster.local")


class Pool:
    """Every random draw of one file, from one numpy Generator (the seed pins the bytes).

    Uniform floats are drawn in batches of 4096 so that the many small choices filler text needs
    cost little Python overhead; strings of random characters come in one vectorised draw.
    """

    _BATCH = 4096

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._floats = np.empty(0)
        self._next = 0

    def random(self) -> float:
        if self._next == len(self._floats):
            self._floats, self._next = self.rng.random(self._BATCH), 0
        value = self._floats[self._next]
        self._next += 1
        return float(value)

    def below(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        """Uniform integer in [low, high], both ends included."""
        return low + self.below(high - low + 1)

    def choice(self, options):
        return options[self.below(len(options))]

    def chars(self, alphabet: str, n: int) -> str:
        """n characters drawn uniformly from alphabet."""
        table = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
        return table[self.rng.integers(0, len(table), n)].tobytes().decode("ascii")

    def bytes(self, n: int) -> bytes:
        return self.rng.bytes(n)


def as_pool(source: Pool | np.random.Generator) -> Pool:
    return source if isinstance(source, Pool) else Pool(source)


def style_name(snake: str, style: str) -> str:
    """A snake_case name in one of the spellings code uses: upper, snake or camel."""
    if style == "upper":
        return snake.upper()
    if style == "snake":
        return snake
    if style == "camel":
        head, *rest = snake.split("_")
        return head + "".join(part.capitalize() for part in rest)
    raise ValueError(f"unknown name style {style!r}")


def sentence(pool: Pool, low: int = 4, high: int = 12) -> str:
    words = [pool.choice(PROSE) for _ in range(pool.between(low, high))]
    return " ".join(words).capitalize() + "."


def exact_sentence(pool: Pool, n: int) -> str:
    """Prose of exactly n characters (n >= 1), cut at n and never ending in a space."""
    text = ""
    while len(text) < n:
        text += sentence(pool) + " "
    text = text[:n]
    return text[:-1] + "." if text.endswith(" ") else text


def _ident(pool: Pool, style: str) -> str:
    return style_name("_".join(pool.choice(WORDS) for _ in range(pool.between(1, 3))), style)


def _host(pool: Pool) -> str:
    return f"{pool.choice(WORDS)}-{pool.choice(WORDS)}.{pool.choice(TLDS)}"


def _timestamp(pool: Pool) -> str:
    return (f"2024-{pool.between(1, 12):02d}-{pool.between(1, 28):02d}T{pool.between(0, 23):02d}:"
            f"{pool.between(0, 59):02d}:{pool.between(0, 59):02d}.{pool.between(0, 999):03d}Z")


# Minifier-style names: one letter, or two letters that are not a JS keyword.
_SHORT_PAIRS = tuple(a + b for a in string.ascii_lowercase for b in string.ascii_letters
                     if a + b not in ("do", "if", "in"))

_SLOTS = {
    "word": lambda p: p.choice(WORDS),
    "ident": lambda p: _ident(p, "snake"),
    "camel": lambda p: _ident(p, "camel"),
    "upper": lambda p: _ident(p, "upper"),
    "pascal": lambda p: "".join(p.choice(WORDS).capitalize() for _ in range(p.between(1, 2))),
    "short": lambda p: p.choice(_SHORT_PAIRS) if p.below(3) == 0 else p.choice(string.ascii_lowercase),
    "num": lambda p: str(p.between(0, 999)),
    "big": lambda p: str(p.between(1000, 99999)),
    "float": lambda p: f"{p.between(0, 99) / 100:.2f}",
    "port": lambda p: p.choice(PORTS),
    "version": lambda p: f"{p.between(0, 9)}.{p.between(0, 30)}.{p.between(0, 20)}",
    "host": _host,
    "ip": lambda p: f"10.{p.between(0, 255)}.{p.between(0, 255)}.{p.between(1, 254)}",
    "path": lambda p: "/" + "/".join(p.choice(WORDS) for _ in range(p.between(1, 4))),
    "url": lambda p: f"https://{_host(p)}/{p.choice(WORDS)}/{p.choice(WORDS)}",
    "ts": _timestamp,
    "date": lambda p: f"2024-{p.between(1, 12):02d}-{p.between(1, 28):02d}",
    "level": lambda p: p.choice(LEVELS),
    "method": lambda p: p.choice(METHODS),
    "status": lambda p: p.choice(STATUSES),
    "ms": lambda p: str(p.between(1, 2500)),
    "bool": lambda p: p.choice(("true", "false")),
    "sentence": sentence,
    "words": lambda p: " ".join(p.choice(PROSE) for _ in range(p.between(2, 6))),
    "title": lambda p: " ".join(p.choice(WORDS).capitalize() for _ in range(p.between(1, 4))),
    "person": lambda p: f"{p.choice(FIRST_NAMES).capitalize()} {p.choice(LAST_NAMES).capitalize()}",
    "email": lambda p: f"{p.choice(FIRST_NAMES)}.{p.choice(LAST_NAMES)}@example.com",
}


class Slots(dict):
    """A mapping for str.format_map that draws a fresh value for every `{slot}` in a template.

    Fixed entries (set like a dict) win; an unknown slot name is a template bug and raises KeyError.
    """

    def __init__(self, pool: Pool, **fixed: str):
        super().__init__(**fixed)
        self.pool = pool

    def __missing__(self, key: str) -> str:
        return _SLOTS[key](self.pool)

    def render(self, template: str, **fixed: str) -> str:
        return template.format_map(Slots(self.pool, **fixed) if fixed else self)
