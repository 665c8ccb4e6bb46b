"""A carrier kind: how one kind of file looks (header, filler blocks, footer) and how it assigns a value.

Templates are str.format_map strings over `text.Slots` (`{word}`, `{ident}`, `{ts}`, ...); literal
braces are doubled. An assignment template holds `{name}` and `{literal}`; the literal is the value
with the quotes the carrier picks, or, for a multi-line value (a PEM block), the raw block where the
syntax allows one (Python triple quotes, JS/Go backticks, a double-quoted .env value) and the value
with escaped newlines (`\\n`) where it does not (JSON, YAML, INI, logs, minified JS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from align_mamba.secrets.data.text import Slots, exact_sentence, style_name

# Marks where the literal goes while the rest of an assignment template is rendered.
_SENTINEL = "\x00"
# A value that every carrier may write without quotes.
_PLAIN = re.compile(r"[A-Za-z0-9][\w./+=~-]*")


@dataclass(frozen=True)
class Embedded:
    """An assignment's text with the value written at text[start:start + len(written)].

    `written` equals the value, except that a multi-line value may have its newlines escaped.
    """

    text: str
    start: int
    written: str


@dataclass(frozen=True)
class Concat:
    """How source code joins two string literals: `open` + first + `joiner` + second + `close`.

    E.g. Python's Concat("(", " +\\n    ", ")") writes ("AKIA" +\\n    "QRST"); the parentheses
    keep the line break inside one expression (a bare `+` at a line's end is a syntax error).
    """

    open: str
    joiner: str
    close: str


@dataclass(frozen=True)
class Inline:
    """One long line of short statements or members (minified style), for a value planted mid-line.

    The line is `open`, then `items` joined by `sep` with `assign` (the value's own statement,
    holding {name} and {literal}) among them, then `close`; all are Slots templates. E.g. Python's
    Inline("", ("{ident}={num}",), ";", "{name}={literal}", "\\n") writes `batch=3;API_KEY="...";rate=7\\n`.
    """

    open: str
    items: tuple[str, ...]
    sep: str
    assign: str
    close: str


@dataclass(frozen=True)
class Carrier:
    """One kind of carrier file.

    assign: assignment templates ({name}, {literal}); name_styles: upper / snake / camel;
    quotes: quote characters it may pick for a value ("" = bare); bare_any: bare values may hold
    any character (INI, logs); multiline: (open, close) that keep a value's newlines raw, or None to
    escape them; comment: prefix of a comment line (pads are comment lines of an exact length);
    concat: the ways this kind concatenates two string literals (source code only); inline: its
    long-line syntax, or None where a value cannot sit inside a long line (.env, INI).
    """

    kind: str
    file_names: tuple[str, ...]
    blocks: tuple[str, ...]
    assign: tuple[str, ...]
    name_styles: tuple[str, ...]
    quotes: tuple[str, ...] = ('"',)
    bare_any: bool = False
    multiline: tuple[str, str] | None = None
    comment: str = "# "
    headers: tuple[str, ...] = ("",)
    footers: tuple[str, ...] = ("",)
    concat: tuple[Concat, ...] = ()
    inline: Inline | None = None

    def header(self, slots: Slots) -> str:
        return slots.render(slots.pool.choice(self.headers))

    def footer(self, slots: Slots) -> str:
        return slots.render(slots.pool.choice(self.footers))

    def block(self, slots: Slots) -> str:
        """One unit of filler: a line or a small syntactic block, ending where another may start."""
        return slots.render(slots.pool.choice(self.blocks))

    def pad_prefix(self, slots: Slots) -> str:
        return self.comment

    def pad(self, n: int, slots: Slots) -> str:
        """Filler of exactly n characters: one comment line, or blank lines when n is too short."""
        prefix = self.pad_prefix(slots)
        room = n - len(prefix) - 1
        if room < 1:
            return "\n" * n
        return prefix + exact_sentence(slots.pool, room) + "\n"

    def _usable(self, quote: str, value: str) -> bool:
        if quote == "":
            return self.bare_any or _PLAIN.fullmatch(value) is not None
        return quote not in value

    def literal(self, value: str, slots: Slots) -> tuple[str, str, str]:
        """(opening quote, value as written, closing quote)."""
        if "\n" in value:
            if self.multiline is not None:
                return self.multiline[0], value, self.multiline[1]
            value = value.replace("\n", "\\n")
        usable = [q for q in self.quotes if self._usable(q, value)]
        if not usable:
            raise ValueError(f"{self.kind}: no quoting for value {value[:40]!r}")
        quote = slots.pool.choice(usable)
        return quote, value, quote

    def embed(self, name: str, value: str, slots: Slots) -> Embedded:
        """`name` (snake_case, restyled for this kind) assigned `value` in this kind's syntax."""
        opening, written, closing = self.literal(value, slots)
        head, tail = self.around(name, slots)
        return Embedded(head + opening + written + closing + tail, len(head) + len(opening), written)

    def around(self, name: str, slots: Slots, template: str | None = None) -> tuple[str, str]:
        """The text before and after the literal of an assignment of `name` (restyled for this kind).

        template: an assignment template ({name}, {literal}); None draws one of `assign`.
        """
        styled = style_name(name, slots.pool.choice(self.name_styles))
        template = slots.pool.choice(self.assign) if template is None else template
        text = slots.render(template, name=styled, literal=_SENTINEL)
        at = text.index(_SENTINEL)
        return text[:at], text[at + 1:]


@dataclass(frozen=True)
class JsonCarrier(Carrier):
    """JSON objects: a JSON-text value nests as an object; strings escape newlines as JSON does."""

    def literal(self, value: str, slots: Slots) -> tuple[str, str, str]:
        if value.startswith('{"'):
            return "", value, ""
        return '"', value.replace("\n", "\\n"), '"'

    def pad(self, n: int, slots: Slots) -> str:
        # An object member keeps the file valid JSON; whitespace is the only shorter filler.
        opening, closing = '  "_comment": "', '",\n'
        room = n - len(opening) - len(closing)
        return opening + exact_sentence(slots.pool, room) + closing if room >= 1 else "\n" * n


@dataclass(frozen=True)
class MinifiedCarrier(Carrier):
    """One line of minified JavaScript: pads are string statements, or empty statements when short."""

    def pad(self, n: int, slots: Slots) -> str:
        opening, closing = f'var {slots["short"][0]}="', '";'
        room = n - len(opening) - len(closing)
        return opening + exact_sentence(slots.pool, room) + closing if room >= 1 else ";" * n


@dataclass(frozen=True)
class LogCarrier(Carrier):
    """Application logs: pads are log lines with a timestamp, level and logger."""

    def pad_prefix(self, slots: Slots) -> str:
        return slots.render("{ts} {level} [{word}] ")


@dataclass(frozen=True)
class MarkdownCarrier(Carrier):
    """Docs: values sit in fenced code blocks; a multi-line value is a fence of its own."""

    def embed(self, name: str, value: str, slots: Slots) -> Embedded:
        if "\n" in value:
            return Embedded("```\n" + value + "\n```\n\n", 4, value)
        return super().embed(name, value, slots)
