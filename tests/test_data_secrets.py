"""Properties of the secret-span dataset generator, its storage format and its CLI."""

from __future__ import annotations

import base64
import configparser
import dataclasses
import hashlib
import json
import re
import shutil
import string
import urllib.parse
import zlib
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml

from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.secrets.data import (
    CARRIER_KINDS,
    DECOY_KINDS,
    FORMAT_NAMES,
    FORMATS,
    SECRET_SPLITS,
    SecretDataConfig,
    decile_window,
    kinds,
    load_secret_split,
    load_split_mask,
    read_file_bytes,
    read_secret_manifest,
    text,
    write_secret_dataset,
)
from align_mamba.secrets.data.__main__ import main as cli_main
from align_mamba.secrets.data.carrier import Carrier, Concat, Inline
from align_mamba.secrets.data.formats import Planted, secret_span
from align_mamba.secrets.data.generate import secret_piece
from align_mamba.secrets.data.hard import (
    HARD_CASE_NAMES,
    HARD_CASES,
    MIN_LINE,
    draw_case,
    json_escaped_pem,
    percent_encode,
    split_literal,
)
from align_mamba.secrets.data.layout import Mark, Piece, join
from align_mamba.secrets.spans import Span, spans_to_mask

BASE = dict(
    seed=11,
    train_files=60,
    val_files=12,
    test_files=14,
    unseen_files=10,
    decoy_files=8,
    length_buckets=(1024, 4096, 16384),
    train_max_length=4096,
)
HELDOUT = ("gitlab_pat", "stripe_live")
# Formats whose published regex anchors on the variable name or the URL around the value.
NEEDS_CONTEXT = ("aws_secret_access_key", "password_in_url", "generic_assignment", "json_secret")


def _config(**overrides) -> SecretDataConfig:
    return SecretDataConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_secret_dataset(_config(), tmp_path_factory.mktemp("secrets") / "ds")


@pytest.fixture(scope="module")
def contents(dataset) -> dict[str, list]:
    """{split: [(LabelledFile, bytes)]} of the module's dataset."""
    return {
        split: [(lf, read_file_bytes(dataset, split, lf)) for lf in load_secret_split(dataset, split)]
        for split in SECRET_SPLITS
    }


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _overlaps(a, b) -> bool:
    return a.start < b.end and b.start < a.end


def test_worked_example_in_docstring():
    key = "AKIA2E3MOWZ7QRSTUVWX"
    assert FORMATS["aws_access_key_id"].value_regex.fullmatch(key)
    # The env carrier writes exactly the docstring's assignment for some draws of its template/quotes.
    written = set()
    for seed in range(40):
        pool = text.Pool(np.random.default_rng(seed))
        embedded = kinds.ENV.embed("aws_access_key_id", key, text.Slots(pool))
        written.add((embedded.text, embedded.start))
    assert (f"AWS_ACCESS_KEY_ID={key}\n", 18) in written
    planted = Piece(f"AWS_ACCESS_KEY_ID={key}\n", (Mark(18, 38, "aws_access_key_id", True),))
    file = join([Piece("DEBUG=false\n"), planted, Piece("PORT=8080\n")])
    data = file.text.encode()
    assert data == b"DEBUG=false\nAWS_ACCESS_KEY_ID=AKIA2E3MOWZ7QRSTUVWX\nPORT=8080\n" and len(data) == 61
    assert (file.marks[0].start, file.marks[0].end) == (30, 50) and data[30:50] == key.encode()
    mask = spans_to_mask(61, [file.marks[0]])
    assert mask.tolist() == [0] * 30 + [1] * 20 + [0] * 11
    assert decile_window(61, 4) == (25, 31)


def test_manifest_layout(dataset, contents):
    manifest = read_secret_manifest(dataset)
    assert set(manifest) == {"generator", "params", "formats", "decoy_kinds", "splits", "files"}
    assert manifest["generator"] == "secrets"
    assert manifest["params"] == json.loads(json.dumps(_config().to_dict()))
    assert manifest["formats"] == {
        "all": sorted(FORMAT_NAMES),
        "heldout": sorted(HELDOUT),
        "train": sorted(set(FORMAT_NAMES) - set(HELDOUT)),
    }
    assert manifest["decoy_kinds"] == list(DECOY_KINDS)
    on_disk = {str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for split, files in contents.items():
        entry = manifest["splits"][split]
        assert entry == {
            "files": len(files),
            "bytes": sum(len(d) for _, d in files),
            "spans": sum(len(lf.spans) for lf, _ in files),
            "hard_spans": 0,  # hard_fraction 0
        }
        assert len(files) == _config().split_files(split)
        for lf, data in files:
            assert re.fullmatch(r"files/\d{4}_[\w.-]+", lf.relpath) and lf.kind in CARRIER_KINDS
            assert manifest["files"][f"{split}/{lf.relpath}"] == {
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }


def test_labels_cover_exactly_the_planted_values(dataset, contents):
    for split, files in contents.items():
        mask = load_split_mask(dataset, split)
        assert mask.dtype == np.uint8
        expected = [spans_to_mask(lf.length, lf.spans) for lf, _ in files]
        assert np.array_equal(mask, np.concatenate(expected) if expected else np.zeros(0, np.uint8))
        for lf, data in files:
            assert len(data) == lf.length and list(lf.spans) == sorted(lf.spans)
            decoded = data.decode("ascii")
            for a, b in combinations(lf.spans + lf.decoys, 2):
                assert not _overlaps(a, b), (split, lf.relpath, a, b)
            for span in lf.spans:
                fmt = FORMATS[span.format]
                value = decoded[span.start : span.end]
                assert fmt.value_regex.fullmatch(value), (span.format, value)
                # The scanner's own regex, reading the context, finds exactly this value.
                lo = max(0, span.start - 400)
                found = {(a + lo, b + lo) for a, b in map(secret_span, fmt.regex.finditer(decoded[lo : span.end + 8]))}
                assert (span.start, span.end) in found, (
                    split,
                    lf.kind,
                    span.format,
                    decoded[span.start - 60 : span.end],
                )


def test_secret_piece_marks_the_raw_value():
    pool = text.Pool(np.random.default_rng(3))
    slots = text.Slots(pool)
    for carrier in kinds.CARRIERS.values():
        for name in FORMAT_NAMES:
            piece, value = secret_piece(slots, carrier, name)
            (mark,) = piece.marks
            marked = piece.text[mark.start : mark.end]
            escaped_ok = FORMATS[name].multiline and marked == value.replace("\n", "\\n")
            assert marked == value or escaped_ok, (carrier.kind, name, marked[:60], value[:60])


def test_decoys_are_recorded_never_labelled(dataset, contents):
    seen_kinds = set()
    for split, files in contents.items():
        for lf, data in files:
            mask = spans_to_mask(lf.length, lf.spans)
            for decoy in lf.decoys:
                assert decoy.format in DECOY_KINDS and mask[decoy.start : decoy.end].sum() == 0
                seen_kinds.add(decoy.format)
            assert len(lf.decoys) <= _config().decoys_per_file
    assert seen_kinds == set(DECOY_KINDS)
    decoy_files = contents["test_decoys"]
    assert decoy_files and all(not lf.spans and lf.decoys and lf.target_decile is None for lf, _ in decoy_files)
    assert not load_split_mask(dataset, "test_decoys").any()
    example = [d for lf, data in decoy_files + contents["test"] for d in lf.decoys if d.format == "example_aws_key"]
    assert example  # the documentation key is present and unlabelled
    for lf, data in contents["test"]:
        for d in lf.decoys:
            if d.format == "example_aws_key":
                assert data[d.start : d.end] in (b"AKIAIOSFODNN7EXAMPLE", b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_filler_holds_no_unrecorded_secret_shapes(contents):
    """Every hit of a self-identifying published regex is a labelled secret or a recorded decoy."""
    for split, files in contents.items():
        for lf, data in files:
            decoded = data.decode("ascii")
            for fmt in FORMATS.values():
                if not fmt.self_identifying:
                    continue
                for match in fmt.regex.finditer(decoded):
                    hit = Span(*secret_span(match))
                    assert any(_overlaps(hit, m) for m in lf.spans + lf.decoys), (split, lf.relpath, match.group())


def test_word_lists_avoid_scanner_keywords():
    keywords = re.compile(r"key|auth|token|secret|pass|cred|access|api", re.IGNORECASE)
    assert not [w for w in text.WORDS + text.PROSE if keywords.search(w)]


def test_same_seed_same_bytes_different_seed_different(dataset, tmp_path):
    small = dict(train_files=8, val_files=2, test_files=3, unseen_files=2, decoy_files=2)
    first = write_secret_dataset(_config(**small), tmp_path / "a")
    second = write_secret_dataset(_config(**small), tmp_path / "b")
    other = write_secret_dataset(_config(**small, seed=12), tmp_path / "c")
    assert _hashes(first) == _hashes(second)
    differing = {k for k, v in _hashes(other).items() if _hashes(first).get(k) != v}
    assert "manifest.json" in differing and any("/files/" in k for k in differing)
    # Each file has its own stream: a larger split starts with the smaller one's files.
    assert all(_hashes(dataset).get(k) == v for k, v in _hashes(first).items() if "/files/" in k and "train" in k)


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_every_draw_matches_the_published_regex(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(FORMAT_NAMES.index(name))
    for _ in range(150):
        value = fmt.generate(rng)
        assert fmt.value_regex.fullmatch(value), value
        if name not in NEEDS_CONTEXT:
            assert secret_span(fmt.regex.search(value)) == (0, len(value)), value


def _independent_base62(n: int) -> str:
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    out = []
    while n:
        n, r = divmod(n, 62)
        out.append(alphabet[r])
    return "".join(reversed(out)) or "0"


def test_github_tokens_checksum_and_shape():
    rng = np.random.default_rng(0)
    for _ in range(300):
        token = FORMATS["github_classic"].generate(rng)
        body, checksum = token[4:-6], token[-6:]
        assert len(body) == 30 and checksum == _independent_base62(zlib.crc32(body.encode())).rjust(6, "0")
        fine = FORMATS["github_fine_grained"].generate(rng)
        assert re.fullmatch(r"github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}", fine)


def _b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_jwt_and_pem_have_real_structure():
    rng = np.random.default_rng(1)
    signature_bytes = {"HS256": 32, "HS512": 64, "ES256": 64, "RS256": 256}
    for _ in range(50):
        header, payload, signature = FORMATS["jwt"].generate(rng).split(".")
        alg = _b64url_json(header)["alg"]
        assert {"sub", "name", "iat", "exp"} <= set(_b64url_json(payload))
        assert len(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))) == signature_bytes[alg]
    labels = set()
    for _ in range(60):
        lines = FORMATS["pem_private_key"].generate(rng).split("\n")
        label = re.fullmatch(r"-----BEGIN ([A-Z ]+)-----", lines[0]).group(1)
        assert lines[-1] == f"-----END {label}-----"
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
        labels.add(label)
        if label == "OPENSSH PRIVATE KEY":
            assert der.startswith(b"openssh-key-v1\x00") and all(len(line) <= 70 for line in lines[1:-1])
            continue
        # DER SEQUENCE whose long-form length covers exactly the rest of the bytes.
        assert der[0] == 0x30
        size_bytes = der[1] & 0x7F if der[1] & 0x80 else 0
        length = int.from_bytes(der[2 : 2 + size_bytes], "big") if size_bytes else der[1]
        assert len(der) == 2 + size_bytes + length
    assert labels == {"RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"}


def test_heldout_formats_only_in_test_unseen(contents):
    banned = [FORMATS[name].regex for name in HELDOUT]
    for split in ("train", "validation"):
        assert contents[split]
        for lf, data in contents[split]:
            assert not {s.format for s in lf.spans} & set(HELDOUT)
            assert not any(regex.search(data.decode("ascii")) for regex in banned), (split, lf.relpath)
    assert all({s.format for s in lf.spans} <= set(HELDOUT) and lf.spans for lf, _ in contents["test_unseen"])
    assert not {s.format for lf, _ in contents["test"] for s in lf.spans} & set(HELDOUT)
    assert {s.format for lf, _ in contents["test_unseen"] for s in lf.spans} == set(HELDOUT)


def test_secrets_sit_in_their_target_decile(contents):
    deciles = set()
    for split in ("train", "validation", "test", "test_unseen"):
        for lf, _ in contents[split]:
            low, high = _config().secrets_per_file
            assert lf.target_decile in range(10) and 1 <= len(lf.spans) <= high
            lo, hi = decile_window(lf.length, lf.target_decile)
            assert all(lo <= s.start and s.end <= hi for s in lf.spans), (lf.relpath, lf.target_decile, lf.spans)
            deciles.add(lf.target_decile)
    assert deciles == set(range(10))


def test_decile_window_partitions_the_file():
    for length in (61, 1000, 1023, 4099):
        windows = [decile_window(length, d) for d in range(10)]
        assert windows[0][0] == 0 and windows[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
        assert all((10 * i) // length == d for d, (lo, hi) in enumerate(windows) for i in range(lo, hi))


def test_lengths_follow_their_buckets(contents):
    config = _config()
    for split, files in contents.items():
        for lf, _ in files:
            assert lf.length_bucket in config.split_buckets(split)
            assert abs(lf.length - lf.length_bucket) <= config.length_jitter * lf.length_bucket + 1
    assert {lf.length_bucket for lf, _ in contents["train"]} == {1024, 4096}
    assert {lf.length_bucket for lf, _ in contents["test"]} == {1024, 4096, 16384}


def test_splits_share_no_secret_and_no_file(contents):
    values = {
        split: {data[s.start : s.end] for lf, data in files for s in lf.spans} for split, files in contents.items()
    }
    digests = {split: {hashlib.sha256(d).digest() for _, d in files} for split, files in contents.items()}
    for a, b in combinations(SECRET_SPLITS, 2):
        assert not values[a] & values[b] and not digests[a] & digests[b]
    every = [data[s.start : s.end] for files in contents.values() for lf, data in files for s in lf.spans]
    assert len(every) == len(set(every))


# Carriers whose text a parser can check: each must still parse with its secrets planted.
SYNTAX_CHECKERS = {
    "json": json.loads,
    "python": lambda t: compile(t, "<generated>", "exec"),
    "yaml": yaml.safe_load,
    "ini": lambda t: configparser.ConfigParser(strict=False, interpolation=None).read_string(t),
}


def test_carriers_keep_their_syntax(contents):
    checked = set()
    for files in contents.values():
        for lf, data in files:
            if lf.kind in SYNTAX_CHECKERS:
                SYNTAX_CHECKERS[lf.kind](data.decode("ascii"))
                checked.add(lf.kind)
            if lf.kind == "minified_js":
                assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert checked == set(SYNTAX_CHECKERS)


def test_tampering_is_detected(dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    lf = load_secret_split(copy, "test")[0]
    path = copy / "test" / lf.relpath
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_secret_split(copy, "test")
    with pytest.raises(DataIntegrityError, match="sha256"):
        read_file_bytes(copy, "test", lf)
    mask_path = copy / "train" / "mask.npy"
    mask_path.write_bytes(mask_path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(DataIntegrityError, match="sha256"):
        load_split_mask(copy, "train")
    (copy / "manifest.json").unlink()
    with pytest.raises(DataIntegrityError, match="manifest not found"):
        read_secret_manifest(copy)
    with pytest.raises(ConfigError, match="split must be one of"):
        load_secret_split(dataset, "holdout")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(heldout_formats=("gitlab_pat", "nope")), "heldout_formats: unknown name.*'nope'.*aws_access_key_id"),
        (dict(kinds=()), "kinds must name at least one of python"),
        (dict(kinds=("python", "cobol")), "kinds: unknown name"),
        (dict(secrets_per_file=(3, 1)), "secrets_per_file: min 3 > max 1"),
        (dict(length_buckets=(100, 4096)), "length_buckets must be >= 512"),
        (dict(train_max_length=1000), "train_max_length=1000 is below the smallest length bucket 1024"),
        (dict(heldout_formats=(), unseen_files=3), "unseen_files=3 needs heldout_formats"),
        (dict(heldout_formats=FORMAT_NAMES), "heldout_formats must leave at least one format"),
        (dict(decoys_per_file=0), "decoy_files=8 needs decoys_per_file >= 1"),
        (dict(train_files=0), "train_files must be >= 1"),
        (dict(length_jitter=0.9), "length_jitter must be a number in"),
        (dict(hard_fraction=1.5), r"hard_fraction must be a number in \[0, 1\], got 1.5"),
        (dict(hard_fraction=float("nan")), r"hard_fraction must be a number in \[0, 1\], got nan"),
        (dict(hard_fraction=True), r"hard_fraction must be a number in \[0, 1\], got True"),
    ],
)
def test_bad_config_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        _config(**overrides)
    assert "\n" not in str(err.value)


def test_cli_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "--out",
        str(out),
        "--seed",
        "5",
        "--train_files",
        "6",
        "--val-files",
        "2",
        "--test-files",
        "2",
        "--unseen_files",
        "2",
        "--decoy-files",
        "1",
        "--length-buckets",
        "1024",
        "2048",
        "--train_max_length",
        "1024",
        "--heldout-formats",
        "slack_webhook",
        "jwt",
        "--secrets_per_file",
        "1",
        "2",
        "--decoys-per-file",
        "1",
        "--kinds",
        "env",
        "json",
        "--hard-fraction",
        "0.5",
    ]
    assert run_cli(cli_main, argv) == 0
    params = read_secret_manifest(out)["params"]
    assert params["heldout_formats"] == ["slack_webhook", "jwt"] and params["secrets_per_file"] == [1, 2]
    assert params["hard_fraction"] == 0.5
    assert params["length_buckets"] == [1024, 2048] and params["kinds"] == ["env", "json"]
    files = load_secret_split(out, "test_unseen")
    assert len(files) == 2 and all({s.format for s in lf.spans} <= {"slack_webhook", "jwt"} for lf in files)
    assert {lf.kind for split in SECRET_SPLITS for lf in load_secret_split(out, split)} <= {"env", "json"}
    assert "wrote secret-span dataset" in capsys.readouterr().err
    assert run_cli(cli_main, ["--out", str(out), "--seed", "1", "--heldout-formats", "nope"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: heldout_formats: unknown name")


# --- hard cases ---------------------------------------------------------------------------------

KEY_ID = "AKIA2E3MOWZ7QRSTUVWX"
# One template, one name style, one joiner: with a pool whose every draw is 0.5 the output is fixed.
TINY = Carrier(
    kind="tiny",
    file_names=("t.py",),
    blocks=("x = 1\n",),
    assign=("{name} = {literal}\n",),
    name_styles=("upper",),
    quotes=('"', "'"),
    concat=(Concat("", " + ", ""),),
    inline=Inline("", ("a=1",), ";", "{name}={literal}", "\n"),
)
API_KEY_ID = dataclasses.replace(FORMATS["aws_access_key_id"], names=("api_key",))


class Halfway(text.Pool):
    """Every uniform draw is 0.5: between(a, b) = a + (b - a + 1) // 2, choice picks the middle option."""

    def random(self) -> float:
        return 0.5


def _case(name: str, fmt, planted: Planted):
    piece = HARD_CASES[name].make(text.Slots(Halfway(np.random.default_rng(0))), TINY, fmt, planted)
    return piece.text, [(m.start, m.end) for m in piece.marks], {(m.label, m.secret, m.case) for m in piece.marks}


def test_concat_marks_both_pieces_and_not_the_join():
    # quotes: both usable, the middle one is "'"; cut: between(0 + 4, 20 - 4) = 4 + 13 // 2 = 10
    body, marks, labels = _case("concat", API_KEY_ID, Planted(KEY_ID, 0, 20))
    assert body == "API_KEY = 'AKIA2E3MOW' + 'Z7QRSTUVWX'\n"
    assert marks == [(11, 21), (26, 36)] and labels == {("aws_access_key_id", True, "concat")}
    assert "".join(body[a:b] for a, b in marks) == KEY_ID
    assert split_literal('"', KEY_ID, 9, '"', Concat("", " + ", "")) == ('"AKIA2E3MO" + "WZ7QRSTUVWX"', 1, 15)
    literal, first, second = split_literal("'", KEY_ID, 9, "'", Concat("(", " +\n    ", ")"))
    assert literal == "('AKIA2E3MO' +\n    'WZ7QRSTUVWX')" and (first, second) == (2, 20)
    compile(f"API_KEY = {literal}\n", "<concat>", "exec")
    # a wrapped value (a URL password) is cut inside the password only: the URL stays unmarked
    body, marks, _ = _case("concat", FORMATS["password_in_url"], Planted("redis://bob:p4ssw0rd-xyz@db:6379/0", 12, 24))
    assert [body[a:b] for a, b in marks] == ["p4ssw0", "rd-xyz"]


def test_base64_marks_the_whole_encoding():
    body, marks, labels = _case("base64", API_KEY_ID, Planted(KEY_ID, 0, 20))
    assert body == "API_KEY_B64 = 'QUtJQTJFM01PV1o3UVJTVFVWV1g='\n"  # name suffix: the middle of "", _b64, _base64
    assert marks == [(15, 43)] and labels == {("aws_access_key_id", True, "base64")}
    assert base64.b64decode(body[15:43]).decode() == KEY_ID


def test_url_encoding_marks_the_encoded_parameter_only():
    assert percent_encode("glpat-Ab_9.x") == "glpat%2DAb%5F9%2Ex" and percent_encode("AKIA0") == "AKIA0"
    value = "glpat-Ab_9cdEFghIJklMN-pq"
    body, marks, labels = _case("url_encoded", FORMATS["gitlab_pat"], Planted(value, 0, len(value)))
    # host model-model.example.com, path model, parameter api_key, a tail &model=500, name download_url
    assert body == (
        "DOWNLOAD_URL = 'https://model-model.example.com/model?api_key=glpat%2DAb%5F9cdEFghIJklMN%2Dpq&model=500'\n"
    )
    assert marks == [(62, 93)] and body[62:93] == "glpat%2DAb%5F9cdEFghIJklMN%2Dpq"
    assert labels == {("gitlab_pat", True, "url_encoded")}
    # letters and digits only: encoding changes nothing, so the case does not apply (planted plainly)
    assert HARD_CASES["url_encoded"].make(text.Slots(Halfway(None)), TINY, API_KEY_ID, Planted(KEY_ID, 0, 20)) is None


def test_json_escaped_pem_marks_begin_to_end_with_the_escapes():
    block = "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----"
    planted = json_escaped_pem(block, "demo", "ci@demo.example.com")
    assert planted.text == (
        '{"type": "service_account", "project_id": "demo", "private_key": "-----BEGIN EC PRIVATE KEY-----\\n'
        'MHcC\\n-----END EC PRIVATE KEY-----\\n", "client_email": "ci@demo.example.com"}'
    )
    assert (planted.start, planted.end) == (66, 132)
    body, marks, labels = _case("json_pem", FORMATS["pem_private_key"], Planted(block, 0, len(block)))
    escaped = "-----BEGIN EC PRIVATE KEY-----\\nMHcC\\n-----END EC PRIVATE KEY-----"
    head = "GOOGLE_CREDENTIALS = '" + '{"type": "service_account", "project_id": "model-model-550", "private_key": "'
    assert body.startswith(head) and marks == [(len(head), len(head) + len(escaped))]
    assert body[marks[0][0] : marks[0][1]] == escaped and "\n" not in body[:-1]
    assert labels == {("pem_private_key", True, "json_pem")}
    assert json.loads(body[body.index("{") : body.rindex("}") + 1])["private_key"] == block + "\n"


def test_minified_line_marks_the_value_mid_line():
    # line length between(1500, 3000) = 2250, value after between(0, 2250) = 1125 bytes of "a=1;" (282 items)
    body, marks, labels = _case("minified", API_KEY_ID, Planted(KEY_ID, 0, 20))
    prefix = "a=1;" * 282 + "API_KEY='"
    assert body == prefix + KEY_ID + "'" + ";a=1" * 282 + "\n"
    assert marks == [(1137, 1157)] and len(prefix) == 1137 and labels == {("aws_access_key_id", True, "minified")}


def test_cases_apply_where_the_syntax_allows():
    applies = {name: case.applies for name, case in HARD_CASES.items()}
    assert applies["concat"](kinds.PYTHON, API_KEY_ID) and not applies["concat"](kinds.ENV, API_KEY_ID)
    assert not applies["concat"](kinds.PYTHON, FORMATS["pem_private_key"])
    assert not applies["base64"](kinds.ENV, FORMATS["password_in_url"])  # a wrapped value: encode what?
    assert applies["json_pem"](kinds.ENV, FORMATS["pem_private_key"]) and not applies["json_pem"](kinds.ENV, API_KEY_ID)
    assert not applies["minified"](kinds.INI, API_KEY_ID) and applies["minified"](kinds.JSON, API_KEY_ID)
    pool = text.Pool(np.random.default_rng(0))
    assert all(draw_case(pool, kinds.PYTHON, API_KEY_ID, 0.0) is None for _ in range(50))
    drawn = Counter(draw_case(pool, kinds.PYTHON, API_KEY_ID, 1.0).name for _ in range(400))
    assert set(drawn) == {"concat", "base64", "url_encoded", "minified"}


def _decoded(case: str, pieces: list[str]) -> str:
    """The secret a treated span (or both pieces of a split literal) stands for."""
    if case == "concat":
        return "".join(pieces)
    (piece,) = pieces
    if case == "base64":
        return base64.b64decode(piece, validate=True).decode("ascii")
    if case == "url_encoded":
        return urllib.parse.unquote(piece)
    if case == "json_pem":
        return json.loads(f'"{piece}"')
    return piece  # plain or minified: the value as it is


def _secrets(lf, data: str) -> list[tuple[str, str, str]]:
    """(format, case, decoded value) of each planted secret; a split literal's two spans are one secret."""
    cases = {(c.start, c.end): c.format for c in lf.cases}
    out, i = [], 0
    while i < len(lf.spans):
        span = lf.spans[i]
        case = cases.get((span.start, span.end), "")
        group = lf.spans[i : i + 2] if case == "concat" else lf.spans[i : i + 1]
        assert all(cases.get((s.start, s.end), "") == case and s.format == span.format for s in group)
        out.append((span.format, case, _decoded(case, [data[s.start : s.end] for s in group])))
        i += len(group)
    return out


@pytest.fixture(scope="module")
def hard(tmp_path_factory) -> dict[str, list]:
    """{split: [(LabelledFile, text)]} of a dataset where every secret that can be is a hard case."""
    config = _config(hard_fraction=1.0, train_files=40, length_buckets=(1024, 4096, 16384, 32768))
    out = write_secret_dataset(config, tmp_path_factory.mktemp("hard") / "ds")
    assert read_secret_manifest(out)["params"]["hard_fraction"] == 1.0
    return {
        split: [(lf, read_file_bytes(out, split, lf).decode("ascii")) for lf in load_secret_split(out, split)]
        for split in SECRET_SPLITS
    }


def test_hard_cases_decode_to_their_format_and_keep_the_syntax(hard):
    seen = Counter()
    for split, files in hard.items():
        for lf, data in files:
            assert set(lf.cases) <= {Span(s.start, s.end, c.format) for s in lf.spans for c in lf.cases}
            assert {c.format for c in lf.cases} <= set(HARD_CASE_NAMES)
            for fmt, case, value in _secrets(lf, data):
                assert FORMATS[fmt].value_regex.fullmatch(value), (split, lf.kind, case, value[:60])
                seen[case] += 1
            if lf.kind in SYNTAX_CHECKERS:
                SYNTAX_CHECKERS[lf.kind](data)
            if lf.kind == "minified_js":
                assert data.count("\n") == 1
            for case in lf.cases:
                if case.format == "minified":
                    lo, hi = data.rfind("\n", 0, case.start) + 1, data.find("\n", case.end)
                    assert hi - lo >= MIN_LINE, (lf.kind, hi - lo)
                if case.format in ("base64", "url_encoded", "json_pem"):
                    assert "\n" not in data[case.start : case.end]
    assert set(seen) == {"", *HARD_CASE_NAMES}
    # the concat pieces of one secret are two spans; a treated secret is most of what this dataset holds
    assert seen[""] < sum(seen.values()) / 2


def test_hard_cases_keep_splits_disjoint_and_held_out_formats_out_of_training(hard):
    values = {split: {v for lf, data in files for _, _, v in _secrets(lf, data)} for split, files in hard.items()}
    for a, b in combinations(SECRET_SPLITS, 2):
        assert not values[a] & values[b]
    every = [v for files in hard.values() for lf, data in files for _, _, v in _secrets(lf, data)]
    assert len(every) == len(set(every))
    for split in ("train", "validation"):
        assert not {s.format for lf, _ in hard[split] for s in lf.spans} & set(HELDOUT)
    assert {lf.relpath for lf, _ in hard["test_unseen"] if lf.cases}  # held-out formats get treatments too


def test_hard_cases_sit_in_their_target_decile_and_count_once(hard):
    for split in ("train", "validation", "test", "test_unseen"):
        for lf, data in hard[split]:
            lo, hi = decile_window(lf.length, lf.target_decile)
            assert all(lo <= s.start and s.end <= hi for s in lf.spans)
            assert 1 <= len(_secrets(lf, data)) <= _config().secrets_per_file[1]


def test_same_seed_same_hard_bytes(tmp_path):
    small = dict(train_files=6, val_files=2, test_files=3, unseen_files=2, decoy_files=1, hard_fraction=0.5)
    first = write_secret_dataset(_config(**small), tmp_path / "a")
    assert _hashes(first) == _hashes(write_secret_dataset(_config(**small), tmp_path / "b"))
    plain = _hashes(write_secret_dataset(_config(**{**small, "hard_fraction": 0.0}), tmp_path / "c"))
    assert any(plain.get(k) != v for k, v in _hashes(first).items() if "/files/" in k)


def test_new_token_formats_have_their_real_shape():
    rng = np.random.default_rng(5)
    for _ in range(100):
        oauth = FORMATS["github_oauth"].generate(rng)
        assert oauth[-6:] == _independent_base62(zlib.crc32(oauth[4:-6].encode())).rjust(6, "0")
        project = FORMATS["openai_project"].generate(rng)
        half = (len(project) - len("sk-proj-T3BlbkFJ")) // 2
        assert len(project) in (132, 164) and project[8 + half : 16 + half] == "T3BlbkFJ"
        assert re.fullmatch(r"sk-ant-api03-[\w-]{93}AA", FORMATS["anthropic_api"].generate(rng))
