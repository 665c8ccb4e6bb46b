"""`align-mamba scan`: exit codes, masking, JSON schema, binary/unreadable paths, line numbers.

The checkpoint is a real (untrained, tiny) ByteTagger saved with infer.save_tagger; thresholds are
chosen from the model's own probabilities on the file so that "clean" and "found" are certain.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import align_mamba.secrets.throughput as throughput_module
from align_mamba.cli import main as cli_main
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.secrets.baselines import TOOLS, ScanResult
from align_mamba.secrets.infer import load_tagger, predict_bytes, save_tagger, tune_tagger
from align_mamba.secrets.scan import (
    binary_reason,
    default_checkpoint,
    display_value,
    findings_for,
    format_finding,
    line_numbers,
    read_text_file,
    shipped_checkpoint,
)
from align_mamba.secrets.spans import Span
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig
from align_mamba.secrets.throughput import COLUMNS as THROUGHPUT_COLUMNS
from align_mamba.secrets.throughput import build_files, size_bytes
from align_mamba.secrets.throughput import main as throughput_main

TOKEN = "ghp_R8qLz0w3VbN5tYc2XkP9mJd4Hs7Ga1Ef6Ui0"  # synthetic, GitHub-classic shaped
SETTINGS = {"threshold": 0.5, "min_span_len": 8, "chunk_len": 64, "overlap": 16}
CLASSES = ("none", "aws_access_key_id", "github_classic")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained bimamba tagger at <tmp>/runs/secrets/tiny/model.pt."""
    torch.manual_seed(0)
    config = TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16)
    path = tmp_path_factory.mktemp("ckpt") / "runs" / "secrets" / "tiny" / "model.pt"
    save_tagger(path, ByteTagger(config, "reference", len(CLASSES), CLASSES), dict(SETTINGS))
    return path


def p_secret(checkpoint: Path, data: bytes) -> np.ndarray:
    """(len(data),) the checkpoint's p(secret) per byte, through the same chunking the scan uses."""
    model, meta = load_tagger(checkpoint, torch.device("cpu"), "reference")
    return 1.0 - predict_bytes(model, data, torch.device("cpu"), meta["chunk_len"], meta["overlap"])[:, 0]


def scan(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(["scan", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# ---- pure helpers on hand-built inputs ----------------------------------------------------------


def test_line_numbers_hand_built():
    data = b"ab\ncd\n\nefg"  # lines: 1 = "ab\n" (0-2), 2 = "cd\n" (3-5), 3 = "\n" (6), 4 = "efg" (7-9)
    assert line_numbers(data, [0, 2, 3, 5, 6, 7, 9]) == [1, 1, 2, 2, 3, 4, 4]
    assert line_numbers(b"no newline", [0, 9]) == [1, 1]


def test_findings_for_hand_built_file():
    data = b"# config\nuser = 'bob'\ntoken = 'ghp_0123456789'\n"
    start = data.index(b"ghp_")
    span = Span(start, start + 14, "github_classic", 0.91234)
    (finding,) = findings_for("cfg.py", data, [span], show=False)
    assert (finding.path, finding.line, finding.start, finding.end) == ("cfg.py", 3, 31, 45)
    assert finding.format == "github_classic" and finding.score == 0.9123
    assert finding.value == "ghp…(14)"  # 14 bytes: at most a quarter (3 characters) shows
    assert format_finding(finding) == "cfg.py:3: [31,45) github_classic score=0.91 ghp…(14)"
    (shown,) = findings_for("cfg.py", data, [span], show=True)
    assert shown.value == "ghp_0123456789"


def test_masking_never_shows_more_than_a_quarter():
    assert display_value(b"AKIAABCDEFGHIJKLMNOP", show=False) == "AKIA…(20)"
    assert display_value(b"hunter2!", show=False) == "hu…(8)"
    assert display_value(b"abc", show=False) == "…(3)"
    assert display_value(b"abc", show=True) == "abc"


def test_format_finding_escapes_newlines():
    data = b"-----BEGIN KEY-----\nMIIE\n-----END KEY-----\n"
    (finding,) = findings_for("k.pem", data, [Span(0, len(data) - 1)], show=True)
    line = format_finding(finding)
    assert "\n" not in line and line.endswith("-----BEGIN KEY-----\\nMIIE\\n-----END KEY-----")


def test_binary_rule():
    assert binary_reason(b"text\x00more").startswith("binary (NUL")
    assert binary_reason("password = 'żółć'\n".encode()) is None
    assert binary_reason("café menu, prix 5€\n".encode("latin-1", errors="replace")) is None
    noise = np.random.default_rng(0).integers(0x80, 0x100, 4096, dtype=np.uint8).tobytes()
    assert binary_reason(noise).startswith("binary (not UTF-8")
    # all bytes non-ASCII: text only because the 3-byte character cut by the 8 KB window is allowed
    cut = ("€" * 3000).encode()  # 8192 = 3 * 2730 + 2
    assert binary_reason(cut) is None
    assert binary_reason(cut[:8192]).startswith("binary (not UTF-8")  # the file itself ends mid-character


def test_read_text_file_skips_large_and_special_files(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 101)
    assert "larger than --max-bytes (101 > 100 bytes)" in read_text_file(big, 100).reason
    assert read_text_file(big, 101) == b"x" * 101
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # reading it would block forever
    assert read_text_file(fifo, 100).reason == "not a regular file"


def test_default_checkpoint_follows_params_else_shipped(tmp_path):
    shipped = shipped_checkpoint()
    assert shipped.name == "bimamba.pt" and shipped.stat().st_size < 8 * 2**20  # package data, modest
    assert default_checkpoint(tmp_path)[0] == shipped  # no project here
    (tmp_path / "params.yaml").write_text("secrets:\n  scan_tagger: b\n")
    assert default_checkpoint(tmp_path)[0] == shipped  # named, but not trained yet
    for name in ("a", "b"):
        (tmp_path / f"runs/secrets/{name}").mkdir(parents=True)
        (tmp_path / f"runs/secrets/{name}/model.pt").write_bytes(b"")
    assert default_checkpoint(tmp_path) == (tmp_path / "runs/secrets/b/model.pt", "params.yaml secrets.scan_tagger")
    (tmp_path / "params.yaml").write_text("secrets: [unclosed\n")  # not ours: ignored, not an error
    assert default_checkpoint(tmp_path)[0] == shipped


# ---- the CLI with a real checkpoint --------------------------------------------------------------


def test_exit_codes_clean_and_found(checkpoint, tmp_path, capsys):
    target = tmp_path / "app.py"
    target.write_text(f"import os\nTOKEN = '{TOKEN}'\nprint(TOKEN)\n")
    top = float(p_secret(checkpoint, target.read_bytes()).max())
    code, out, err = scan(capsys, target, "--checkpoint", checkpoint, "--threshold", min(1.0, top + 1e-3))
    assert code == 0 and out == ""
    assert "scanned 1 files" in err and "0 findings" in err
    code, out, _ = scan(capsys, target, "--checkpoint", checkpoint, "--threshold", 0)
    assert code == 1
    assert out.startswith(f"{target}:1: [0,{len(target.read_bytes())}) ")  # every byte reaches 0


def test_bf16_weights_and_ssd_chunk_size_scan_end_to_end(checkpoint, tmp_path, capsys):
    target = tmp_path / "app.py"
    target.write_text(f"TOKEN = '{TOKEN}'\n")
    runs = [
        scan(capsys, target, "--checkpoint", checkpoint, "--threshold", 0, "--json", *extra)
        for extra in ([], ["--weights", "bfloat16"])
    ]
    assert [code for code, _, _ in runs] == [1, 1]
    (fp32,), (bf16,) = (json.loads(out)["findings"] for _, out, _ in runs)  # the whole file, one span
    fp32_score = fp32.pop("score")
    assert bf16.pop("score") == pytest.approx(fp32_score, abs=1e-2) and fp32 == bf16
    code, _, err = scan(capsys, target, "--checkpoint", checkpoint, "--weights", "float16")
    assert code == 2 and "--weights" in err
    code, out, _ = scan(capsys, target, "--checkpoint", checkpoint, "--threshold", 0, "--json", "--ssd-chunk-size", 5)
    (reblocked,) = json.loads(out)["findings"]
    assert reblocked.pop("score") == pytest.approx(fp32_score, abs=1e-4) and reblocked == fp32
    code, _, err = scan(capsys, target, "--checkpoint", checkpoint, "--ssd-chunk-size", 0)
    assert code == 2 and "ssd_chunk_size must be >= 1" in err


def test_exit_2_without_a_checkpoint(checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "a.txt").write_text("hello\n")
    code, _, err = scan(capsys, tmp_path / "a.txt", "--checkpoint", tmp_path / "missing.pt")
    assert code == 2 and "checkpoint not found" in err
    monkeypatch.chdir(tmp_path)  # no project here: the shipped tagger scans
    code, _, err = scan(capsys, "a.txt")
    assert code == 0 and "using checkpoint" in err and "bimamba.pt (the tagger shipped" in err
    assert "cpu scan" in err
    code, _, err = scan(capsys, "a.txt", "--checkpoint", checkpoint, "--threshold", 1.5)
    assert code == 2 and "--threshold must be in [0, 1]" in err
    code, _, err = scan(capsys, "a.txt", "--checkpoint", checkpoint, "--bogus")
    assert code == 2 and "unrecognized arguments: --bogus" in err


def test_default_checkpoint_is_the_projects_scan_tagger(checkpoint, tmp_path, capsys, monkeypatch):
    project = checkpoint.parents[3]  # the directory holding runs/secrets/tiny/model.pt
    (project / "params.yaml").write_text("secrets:\n  scan_tagger: tiny\n")
    monkeypatch.chdir(project)
    (tmp_path / "a.txt").write_text("hello world\n")  # >= min_span_len bytes
    code, _, err = scan(capsys, tmp_path / "a.txt", "--threshold", 0)
    assert code == 1 and "using checkpoint" in err and "runs/secrets/tiny/model.pt" in err


def test_values_masked_unless_show_secrets(checkpoint, tmp_path, capsys):
    target = tmp_path / ".env"
    content = f"GITHUB_TOKEN={TOKEN}"
    target.write_text(content)
    common = [target, "--checkpoint", checkpoint, "--threshold", 0]
    for argv in (common, [*common, "--json"]):
        code, out, err = scan(capsys, *argv)
        assert code == 1 and TOKEN not in out and TOKEN not in err and TOKEN[4:12] not in out
    code, out, _ = scan(capsys, *common)
    assert out.strip().endswith(f"GITH…({len(content)})")
    code, out, _ = scan(capsys, *common, "--show-secrets")
    assert out.strip().endswith(content)
    code, out, _ = scan(capsys, *common, "--json", "--show-secrets")
    assert json.loads(out)["findings"][0]["value"] == content


def test_json_schema_binary_and_unreadable(checkpoint, tmp_path, capsys):
    tree = tmp_path / "repo"
    (tree / "src" / "deep").mkdir(parents=True)
    (tree / ".git").mkdir()
    (tree / ".git" / "config").write_text(f"token = {TOKEN}\n")  # never entered
    (tree / "src" / "deep" / "settings.py").write_text(f"SECRET = '{TOKEN}'\n")
    (tree / "README.md").write_text("# demo project\n")
    (tree / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    (tree / "dangling").symlink_to(tmp_path / "gone.txt")
    missing = tmp_path / "nope.txt"
    code, out, err = scan(capsys, tree, missing, "--checkpoint", checkpoint, "--threshold", 0, "--json")
    doc = json.loads(out)
    assert code == 1
    assert set(doc) == {
        "findings",
        "skipped",
        "errors",
        "scanned_files",
        "scanned_bytes",
        "checkpoint",
        "backend",
        "device",
        "gate",
    }
    # --threshold 0 is below the checkpoint's 0.5: the automatic gate stays off, every byte is read
    assert doc["gate"] == {"enabled": False, "margin": 256, "model_bytes": doc["scanned_bytes"]}
    types = {"path": str, "line": int, "start": int, "end": int, "format": str, "score": float, "value": str}
    for finding in doc["findings"]:
        assert {k: type(v) for k, v in finding.items()} == types
        assert finding["format"] in CLASSES[1:] and 0.0 <= finding["score"] <= 1.0
    assert sorted(f["path"] for f in doc["findings"]) == [str(tree / "README.md"), str(tree / "src/deep/settings.py")]
    assert doc["skipped"] == [{"path": str(tree / "logo.png"), "reason": "binary (NUL byte in the first 8 KB)"}]
    errors = {e["path"]: e["message"] for e in doc["errors"]}
    assert errors.keys() == {str(tree / "dangling"), str(missing)}
    assert errors[str(tree / "dangling")].startswith("broken symlink")
    assert errors[str(missing)] == "no such file or directory"
    assert f"cannot read {missing}" in err and f"cannot read {tree / 'dangling'}" in err
    assert doc["scanned_files"] == 2
    assert doc["scanned_bytes"] == len(f"SECRET = '{TOKEN}'\n") + len("# demo project\n")
    assert (doc["checkpoint"], doc["backend"], doc["device"]) == (str(checkpoint), "reference", "cpu")


def test_only_unreadable_input_exits_2(checkpoint, tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    code, out, err = scan(capsys, tmp_path / "dangling", tmp_path / "missing", "--checkpoint", checkpoint, "--json")
    assert code == 2 and json.loads(out)["scanned_files"] == 0 and len(json.loads(out)["errors"]) == 2
    (tmp_path / "pic.bin").write_bytes(bytes(10))  # skipped, not an error: a clean scan
    code, _, _ = scan(capsys, tmp_path / "pic.bin", "--checkpoint", checkpoint)
    assert code == 0


def test_line_numbers_of_real_findings(checkpoint, tmp_path, capsys):
    """Findings at a low threshold (many short runs): each line equals a direct count of the newlines before it."""
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "key", "=", "token", "0x1f", TOKEN, "url", "\n", "\n"]
    data = " ".join(rng.choice(words, 400)).encode()
    target = tmp_path / "mixed.txt"
    target.write_bytes(data)
    threshold = float(np.quantile(p_secret(checkpoint, data), 0.2))
    code, out, _ = scan(capsys, target, "--checkpoint", checkpoint, "--threshold", threshold, "--json")
    findings = json.loads(out)["findings"]
    assert code == 1 and len({f["line"] for f in findings}) >= 3  # spans over several lines
    for f in findings:
        assert f["line"] == data[: f["start"]].count(b"\n") + 1


def test_console_script_exit_code(checkpoint, tmp_path):
    """The real process: `python -m align_mamba.cli scan` (what the `align-mamba` script runs)."""
    (tmp_path / "a.txt").write_text("nothing to see here\n")
    command = [
        sys.executable,
        "-m",
        "align_mamba.cli",
        "scan",
        str(tmp_path / "a.txt"),
        "--checkpoint",
        str(checkpoint),
        "--threshold",
        "0",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith(f"{tmp_path / 'a.txt'}:1: [0,20) ")


# ---- throughput ----------------------------------------------------------------------------------


def test_throughput_files_exact_size_deterministic(tmp_path):
    first = build_files(tmp_path / "a", [0.001, 0.002], ["log", "yaml"], seed=3)
    again = build_files(tmp_path / "b", [0.001, 0.002], ["log", "yaml"], seed=3)
    other = build_files(tmp_path / "c", [0.001], ["log"], seed=4)
    assert [(f.kind, f.path.stat().st_size) for f in first] == [
        ("log", 1049),
        ("yaml", 1049),
        ("log", 2097),
        ("yaml", 2097),
    ]
    for f, g in zip(first, again):
        assert f.path.read_bytes() == g.path.read_bytes() and f.planted == g.planted >= 1
        assert list((f.directory / "files").iterdir()) == [f.path]  # alone in its directory
    assert other[0].path.read_bytes() != first[0].path.read_bytes()
    with pytest.raises(ConfigError, match="--sizes-mb"):
        size_bytes(0.0001)


def test_throughput_counts_a_key_reported_line_by_line_as_one_finding(tmp_path, monkeypatch):
    """Findings are merged as the scoring merges them (gap <= 2 bytes): a PEM block that a
    scanner reports per line is one finding; two secrets 10 bytes apart stay two."""
    pem_lines = [Span(0, 64, "pem"), Span(65, 129, "pem"), Span(130, 160, "pem")]  # "\n" between lines
    separate = [Span(200, 220, "aws"), Span(230, 250, "aws")]

    class Tool:
        def run(self, directory):
            predictions = {"files/a.py": pem_lines + separate}
            return ScanResult("fake", "1.0", predictions, 0.1, 300, 0.003, 0)

    monkeypatch.setitem(throughput_module.TOOLS, "fake", Tool())
    seconds, found, version = throughput_module.time_baseline("fake", tmp_path, repeats=1)
    assert (found, version) == (3, "1.0")


def test_throughput_cli_writes_csv(checkpoint, tmp_path, capsys):
    tools = [name for name, tool in TOOLS.items() if importlib.util.find_spec(tool.dist.replace("-", "_"))]
    out = tmp_path / "throughput.csv"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--sizes-mb",
        "0.001",
        "--kinds",
        "yaml",
        "--device",
        "cpu",
        "--repeats",
        "2",
        "--seed",
        "0",
        "--tools",
        *tools,
    ]
    assert run_cli(throughput_main, argv) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == THROUGHPUT_COLUMNS
    assert list(table.system) == ["tagger", *tools] and (table.kind == "yaml").all()
    assert (table.bytes == 1049).all() and (table.seconds > 0).all() and (table.planted >= 1).all()
    assert np.allclose(table.mb_per_s, table.bytes / 2**20 / table.seconds, rtol=1e-3)
    assert (table.findings >= 0).all()
    if "credsweeper" in tools:  # the ratio column: each row's throughput over CredSweeper's
        reference = float(table.mb_per_s[table.system == "credsweeper"].iloc[0])
        assert np.allclose(table.vs_credsweeper, table.mb_per_s / reference, rtol=1e-3)
    assert "mb_per_s" in capsys.readouterr().out  # the printed table
    bad = run_cli(throughput_main, [*argv[:4], "--repeats", "0"])
    assert bad == 2


def test_throughput_without_the_tagger_times_the_baselines_alone(tmp_path, capsys):
    out = tmp_path / "baselines.csv"
    argv = ["--no-tagger", "--out", str(out), "--sizes-mb", "0.001", "--kinds", "yaml", "--tools", "detect-secrets"]
    assert run_cli(throughput_main, argv) == 0
    assert list(pd.read_csv(out).system) == ["detect-secrets"]
    assert run_cli(throughput_main, ["--no-tagger", "--out", str(out), "--tools"]) == 2
    assert run_cli(throughput_main, ["--out", str(out), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "give --checkpoint, or --no-tagger" in capsys.readouterr().err


def test_throughput_checks_every_tool_is_installed_before_timing_anything(checkpoint, tmp_path, capsys, monkeypatch):
    def missing(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    def timed(*args, **kwargs):
        raise AssertionError("timed before checking the tools")

    monkeypatch.setattr(importlib.metadata, "version", missing)
    monkeypatch.setattr(throughput_module, "measure", timed)
    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "t.csv"), "--tools", "credsweeper"]
    assert run_cli(throughput_main, argv) == 2
    assert "credsweeper is not installed: pip install" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_throughput_profile_names_the_operators_of_one_scan(checkpoint, tmp_path):
    out, profile = tmp_path / "throughput.csv", tmp_path / "profile.txt"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--sizes-mb",
        "0.001",
        "0.002",
        "--kinds",
        "log",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--tools",
        "--profile",
        str(profile),
    ]
    assert run_cli(throughput_main, argv) == 0
    text = profile.read_text()
    assert text.startswith("one scan of ") and "(2097 bytes) on cpu" in text.splitlines()[0]  # the largest file
    assert "aten::" in text and "Self CPU" in text
    assert (
        run_cli(
            throughput_main, ["--no-tagger", "--out", str(out), "--tools", "detect-secrets", "--profile", str(profile)]
        )
        == 2
    )


def test_ssd_chunk_size_changes_the_work_split_not_the_probabilities(checkpoint):
    data = np.random.default_rng(1).integers(32, 127, 3000).astype(np.uint8).tobytes()
    model, meta = load_tagger(checkpoint, torch.device("cpu"), "reference")
    saved = predict_bytes(model.double(), data, torch.device("cpu"), meta["chunk_len"], meta["overlap"])
    assert tune_tagger(model, "float32", ssd_chunk_size=5) == "ssd chunk 5"
    assert {m.chunk_size for m in model.modules() if hasattr(m, "A_log")} == {5}  # was 16: blocks split anew
    retuned = predict_bytes(model, data, torch.device("cpu"), meta["chunk_len"], meta["overlap"])
    np.testing.assert_allclose(retuned, saved, rtol=0, atol=1e-6)


def test_tagger_settings_label_the_csv_rows_and_bf16_casts_the_weights(checkpoint, tmp_path):
    model, _ = load_tagger(checkpoint, torch.device("cpu"), "reference")
    assert tune_tagger(model, "float32", None) == "" and model.head.weight.dtype == torch.float32
    assert tune_tagger(model, "bfloat16", 8) == "ssd chunk 8, bf16 weights"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    transformer = ByteTagger(TaggerConfig(variant="transformer", d_model=16, n_layers=1, n_heads=2), "sdpa", 3)
    with pytest.raises(ConfigError, match="no Mamba-2 mixer"):
        tune_tagger(transformer, "float32", 8)
    with pytest.raises(ConfigError, match="weights must be one of"):
        tune_tagger(model, "float16")
    out = tmp_path / "throughput.csv"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--sizes-mb",
        "0.001",
        "--kinds",
        "log",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--tools",
        "--ssd-chunk-size",
        "8",
    ]
    assert run_cli(throughput_main, argv) == 0
    # the scan's candidate gate is on by default on the CPU, and named beside the other settings
    assert pd.read_csv(out).settings.tolist() == ["ssd chunk 8, candidate gate (margin 256), 1 thread"]
    assert run_cli(throughput_main, [*argv[:-1], "0"]) == 2


def test_bridge_joins_a_dip_inside_a_secret_body_and_keeps_neighbours_apart():
    from align_mamba.secrets.infer import bridge_spans
    from align_mamba.secrets.spans import Span

    data = b'k="' + b"A" * 20 + b"x+y" + b"B" * 20 + b'" v="' + b"C" * 10 + b'"'
    a, b, c = Span(3, 23, "pem", 0.9), Span(26, 46, "pem", 0.6), Span(51, 61, "jwt", 0.8)
    # the dip "x+y" is body bytes: one span, score weighted by tagged bytes (20 and 20)
    assert bridge_spans([a, b, c], data) == [Span(3, 46, "pem", 0.75), c]  # '" v="' keeps c apart
    assert bridge_spans([a, b], data, max_gap=2) == [a, b]  # a 3-byte gap is past a 2-byte limit
    # the longer part names the joined span
    assert bridge_spans([Span(3, 8, "jwt", 1.0), b], data)[0].format == "pem"
