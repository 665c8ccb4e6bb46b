"""`align-mamba scan` with hostile file names: one finding is one line, and the name can be recovered.

Names hold a newline, a tab, a carriage return, bytes that are not UTF-8, a backslash, a double quote
and U+2028. The expected quoting is decoded here by an independent parser of the documented escapes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align_mamba.cli import main as cli_main
from align_mamba.secrets.infer import save_tagger
from align_mamba.secrets.scan import quote_path
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

CLASSES = ("none", "github_classic")
# File names as bytes: what the filesystem holds.
NAMES = [
    b"plain.txt",
    b"new\nline.txt",
    b"tab\there.txt",
    b"cr\rx.txt",
    b"latin1-\xe9\xff.txt",
    b"back\\slash.txt",
    b'quo"te.txt',
    "sep\u2028arator.txt".encode(),
    "caf\u00e9.txt".encode(),
    b"ctl\x01\x7f.txt",
    "c1-\u0085.txt".encode(),
]
NAMED = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r", "\\": "\\", '"': '"'}


def unquote(text: str) -> bytes:
    """The file name's bytes from one printed path (the documented escapes, parsed by hand)."""
    if not text.startswith('"'):
        return text.encode()
    assert text.endswith('"') and len(text) >= 2
    body, out, i = text[1:-1], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            assert char not in '"\n\r\t' and ord(char) >= 0x20
            out += char.encode()
            i += 1
        elif body[i + 1] in NAMED:
            out += NAMED[body[i + 1]].encode()
            i += 2
        elif body[i + 1] == "x":
            out.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            assert body[i + 1] == "u"
            out += chr(int(body[i + 2 : i + 6], 16)).encode()
            i += 6
    return bytes(out)


def test_quote_path_hand_built():
    assert quote_path("src/app.py") == "src/app.py"
    assert quote_path("café/ünï.py") == "café/ünï.py"  # plain UTF-8 stays readable
    assert quote_path("a\nb") == '"a\\nb"'
    assert quote_path("a\tb\\c") == '"a\\tb\\\\c"'
    assert quote_path('say "hi"') == '"say \\"hi\\""'
    assert quote_path(os.fsdecode(b"x\xff\xe9")) == '"x\\xff\\xe9"'
    assert quote_path("\x01\x7f") == '"\\x01\\x7f"'
    assert quote_path("a\u2028b\u0085") == '"a\\u2028b\\u0085"'
    # A literal backslash-n (two characters) differs from a newline once quoted.
    assert quote_path("a\\nb") == '"a\\\\nb"' != quote_path("a\nb")


@pytest.mark.parametrize("name", NAMES, ids=lambda name: repr(name)[2:-1])
def test_quote_path_round_trips(name):
    printed = quote_path(os.fsdecode(name))
    assert len(printed.splitlines()) == 1 and printed.isprintable()
    assert unquote(printed) == name


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained tagger; at threshold 0 every file of at least min_span_len bytes is one finding."""
    torch.manual_seed(0)
    config = TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_tagger(
        path,
        ByteTagger(config, "reference", len(CLASSES), CLASSES),
        {"threshold": 0.5, "min_span_len": 4, "chunk_len": 64, "overlap": 16},
    )
    return path


@pytest.fixture
def hostile_tree(tmp_path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in NAMES:
        with open(os.path.join(os.fsencode(tree), name), "wb") as handle:
            handle.write(b"token = 'abcdefgh'\n")
    return tree


def test_scan_prints_one_line_per_finding_and_names_survive(checkpoint, hostile_tree):
    """The real process, stdout as bytes: valid UTF-8, one line per finding, every name recoverable."""
    command = [
        sys.executable,
        "-m",
        "align_mamba.cli",
        "scan",
        str(hostile_tree),
        "--checkpoint",
        str(checkpoint),
        "--threshold",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(command, capture_output=True, timeout=120)
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")
    lines = proc.stdout.decode("utf-8").splitlines()  # strict: raises on anything not UTF-8
    assert len(lines) == len(NAMES)  # one finding per file at threshold 0 on one line
    prefix = os.fsencode(hostile_tree) + b"/"
    printed = set()
    for line in lines:
        path = line[: line.index(":1: [0,")]
        raw = unquote(path)
        assert raw.startswith(prefix)
        printed.add(raw[len(prefix) :])
    assert printed == set(NAMES)


def test_scan_json_keeps_undecodable_names_as_escapes(checkpoint, hostile_tree):
    command = [
        sys.executable,
        "-m",
        "align_mamba.cli",
        "scan",
        str(hostile_tree),
        "--checkpoint",
        str(checkpoint),
        "--threshold",
        "0",
        "--device",
        "cpu",
        "--json",
    ]
    proc = subprocess.run(command, capture_output=True, timeout=120)
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")
    doc = json.loads(proc.stdout.decode("utf-8"))
    names = {os.path.basename(os.fsencode(finding["path"])) for finding in doc["findings"]}
    assert names == set(NAMES)


def test_cannot_read_warning_is_one_line(checkpoint, tmp_path, capsys):
    missing = tmp_path / "gone\nfake: finding"
    assert cli_main(["scan", str(missing), "--checkpoint", str(checkpoint)]) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "cannot read" in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"cannot read {quote_path(str(missing))}: no such file or directory"
    )
