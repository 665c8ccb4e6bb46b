"""Baseline scanner adapters: value location, both tools on planted synthetic secrets (skipped when a
tool is not installed), and the CLI's outputs.

Secret values are drawn from a seeded RNG at test time, so this file holds no secret-shaped literal.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import itertools
import json
import random
import string

import numpy as np
import pytest

from align_mamba.core.errors import DataIntegrityError, run_cli
from align_mamba.secrets import baselines
from align_mamba.secrets.baselines import (
    TOOLS,
    Tool,
    _line_starts,
    locate_value,
    main,
    run_credsweeper,
    run_detect_secrets,
)
from align_mamba.secrets.data import SecretDataConfig, load_secret_split, write_secret_dataset
from align_mamba.secrets.data.pem import ec_sec1
from align_mamba.secrets.data.text import as_pool
from align_mamba.secrets.score import merge_spans


def needs(module: str, dist: str):
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"{dist} not installed: pip install -e '.[baselines]'"
    )


needs_detect_secrets = needs("detect_secrets", "detect-secrets")
needs_credsweeper = needs("credsweeper", "credsweeper")


# --- locating a reported value ---


def _locate(text: bytes, line_num: int, value: str, column=None):
    return locate_value(text, _line_starts(text), line_num, value, column)


def test_value_is_located_in_its_line_in_bytes_not_characters():
    text = "a = 1\nключ = 'Xy7Qz9'\nb = 'Xy7Qz9'\n".encode()
    start, end = _locate(text, 2, "Xy7Qz9")
    assert text[start:end] == b"Xy7Qz9" and start == text.index(b"'Xy7Qz9'") + 1  # line 2, not line 3
    start, _ = _locate(text, 3, "Xy7Qz9")
    assert start == text.rindex(b"Xy7Qz9")


def test_column_breaks_ties_within_a_line():
    line = "url = 'Xy7Qz9'; backup = 'Xy7Qz9'"
    text = f"# ключ\n{line}\n".encode()
    first, second = text.index(b"Xy7Qz9"), text.rindex(b"Xy7Qz9")
    assert _locate(text, 2, "Xy7Qz9")[0] == first
    assert _locate(text, 2, "Xy7Qz9", column=line.rindex("Xy7Qz9"))[0] == second


def test_wrong_line_falls_back_to_the_nearest_occurrence_in_the_file():
    text = b"k: |\n  Xy7Qz9\nother: 1\nmore: 2\nlast: Xy7Qz9\n"  # a YAML tool may report line 1
    assert _locate(text, 1, "Xy7Qz9")[0] == text.index(b"Xy7Qz9")
    assert _locate(text, 4, "Xy7Qz9")[0] == text.rindex(b"Xy7Qz9")
    assert _locate(text, 99, "Xy7Qz9")[0] == text.index(b"Xy7Qz9")  # no such line: from byte 0


def test_absent_or_empty_values_are_unlocated():
    text = b"a = 1\n"
    assert _locate(text, 1, "zzz") is None
    assert _locate(text, 1, "") is None and _locate(text, 1, None) is None


def test_a_missing_files_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataIntegrityError, match="no files/ directory"):
        baselines._scan_targets(tmp_path)


# --- planted secrets ---


def _token(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A split dir with 3 files and {relpath: [(start, end), ...]} of every planted value."""
    rng = random.Random(5)
    b62 = string.ascii_letters + string.digits
    values = {
        "aws_id": "AKIA" + _token(rng, string.ascii_uppercase + "234567", 16),
        "aws_secret": _token(rng, b62 + "/+", 40),
        "github": "ghp_" + _token(rng, b62, 36),
        "password": _token(rng, b62, 10) + "!#" + _token(rng, b62, 4),
    }
    pem = ec_sec1(as_pool(np.random.default_rng(5))).strip()  # the generator's structurally valid key
    texts = {
        "files/0001_settings.py": f'import os\n\nAWS_ACCESS_KEY_ID = "{values["aws_id"]}"\n'
        f'AWS_SECRET_ACCESS_KEY = "{values["aws_secret"]}"\n\n\ndef f():\n    return 1\n',
        "files/0002_app.env": f"DEBUG=true\nGITHUB_TOKEN={values['github']}\nDB_PASSWORD={values['password']}\n",
        "files/0003_deploy.pem": pem + "\n",
    }
    split = tmp_path_factory.mktemp("data") / "test"
    truth = {}
    for relpath, text in texts.items():
        (split / relpath).parent.mkdir(parents=True, exist_ok=True)
        (split / relpath).write_text(text)
        data = text.encode()
        planted_values = [v for v in (*values.values(), pem) if v in text]
        truth[relpath] = sorted((data.index(v.encode()), data.index(v.encode()) + len(v)) for v in planted_values)
    return split, truth, values


def _check_located(result, split, truth):
    """Every predicted span lies inside a planted value (spans are the bytes the tool reported)."""
    assert result.unlocated == 0
    assert set(result.predictions) <= set(truth)
    for relpath, spans in result.predictions.items():
        for span in spans:
            assert any(lo <= span.start and span.end <= hi for lo, hi in truth[relpath]), (relpath, span)
    assert result.bytes_scanned == sum(p.stat().st_size for p in (split / "files").iterdir())
    assert result.wall_seconds > 0 and result.mb_per_s > 0


def _exact(result, relpath, value_range):
    return [s for s in result.predictions.get(relpath, []) if (s.start, s.end) == value_range]


@needs_detect_secrets
def test_detect_secrets_spans_are_the_planted_bytes(planted):
    split, truth, values = planted
    result = run_detect_secrets(split)
    assert (result.tool, result.version) == ("detect-secrets", importlib.metadata.version("detect-secrets"))
    _check_located(result, split, truth)
    aws_id = truth["files/0001_settings.py"][0]
    assert (split / "files/0001_settings.py").read_bytes()[slice(*aws_id)] == values["aws_id"].encode()
    assert [s.format for s in _exact(result, "files/0001_settings.py", aws_id)] == ["AWS Access Key"]


@needs_credsweeper
def test_credsweeper_spans_are_the_planted_bytes(planted):
    split, truth, values = planted
    result = run_credsweeper(split)
    assert (result.tool, result.version) == ("credsweeper", importlib.metadata.version("credsweeper"))
    _check_located(result, split, truth)
    aws_id = truth["files/0001_settings.py"][0]
    assert _exact(result, "files/0001_settings.py", aws_id)  # several rules report the key id
    # It reports a PEM key line by line; merged, those lines are exactly the planted block.
    merged = [(s.start, s.end) for s in merge_spans(result.predictions.get("files/0003_deploy.pem", []))]
    assert merged in ([], truth["files/0003_deploy.pem"])


# --- the CLI, on a tiny dataset from the real generator ---


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    config = SecretDataConfig(
        seed=0,
        train_files=1,
        val_files=0,
        test_files=3,
        unseen_files=1,
        decoy_files=2,
        length_buckets=(1024,),
        train_max_length=1024,
    )
    return write_secret_dataset(config, tmp_path_factory.mktemp("gen") / "secrets")


@needs_detect_secrets
@needs_credsweeper
def test_cli_writes_scores_predictions_and_summary(dataset, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "--data",
                str(dataset),
                "--out",
                str(out),
                "--splits",
                "test",
                "test_decoys",
                "--tools",
                "detect-secrets",
                "credsweeper",
                "--iou_threshold",
                "0.5",
                "--merge-gap",
                "2",
            ]
        )
        == 0
    )
    for tool, split in itertools.product(("detect-secrets", "credsweeper"), ("test", "test_decoys")):
        labels = load_secret_split(dataset, split)
        scores = json.loads((out / tool / split / "scores.json").read_text())
        assert (scores["tool"], scores["files"]) == (tool, len(labels))
        assert scores["n_true"] == sum(len(f.spans) for f in labels)
        assert {"version", "wall_seconds", "mb_per_s", "unlocated", "per_format", "by_length"} <= set(scores)
        rows = [json.loads(line) for line in (out / tool / split / "predictions.jsonl").read_text().splitlines()]
        assert [r["relpath"] for r in rows] == [f.relpath for f in labels]
        assert all(0 <= s["start"] < s["end"] <= f.length for r, f in zip(rows, labels) for s in r["spans"])
    with open(out / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [(r["tool"], r["split"]) for r in summary] == [
        ("detect-secrets", "test"),
        ("detect-secrets", "test_decoys"),
        ("credsweeper", "test"),
        ("credsweeper", "test_decoys"),
    ]
    assert {"span_f1", "hit_rate", "byte_f1", "false_alarms_per_mb", "mb_per_s", "unlocated"} <= set(summary[0])


@needs_detect_secrets
def test_cli_predictions_are_byte_identical_on_a_rerun(dataset, tmp_path):
    for run in ("a", "b"):
        main(["--data", str(dataset), "--out", str(tmp_path / run), "--splits", "test", "--tools", "detect-secrets"])
    relpath = "detect-secrets/test/predictions.jsonl"
    assert (tmp_path / "a" / relpath).read_bytes() == (tmp_path / "b" / relpath).read_bytes()


def test_a_missing_tool_is_one_line_with_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(TOOLS, "credsweeper", Tool("align-mamba-no-such-scanner", run_credsweeper))
    code = run_cli(main, ["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--tools", "credsweeper"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == "error: align-mamba-no-such-scanner is not installed: pip install -e '.[baselines]'"
    assert not (tmp_path / "out").exists()
