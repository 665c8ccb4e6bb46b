"""Baseline secret scanners, run as their users run them, with findings turned into byte spans.

    python -m align_mamba.secrets.baselines --data DIR --out OUTDIR [--splits test test_unseen test_decoys]
        [--tools detect-secrets credsweeper] [--iou-threshold 0.5] [--merge-gap 2] [--log FILE]

Each tool scans a split's `files/` directory once with its default rules and filters:
CredSweeper through its CLI (`credsweeper --path files --save-json OUT` from the split directory,
timed as a user waits for it, interpreter start and ML model load included); detect-secrets through
its Python API (`SecretsCollection.scan_files` under `default_settings()`, what `detect-secrets scan`
runs), since its CLI report hides the values; only the scan is timed. Both report a line number and
a value string; columns are unreliable (NOTES §3), so a finding becomes the bytes of its value found
in its line, else anywhere in the file, at the occurrence nearest the reported line (CredSweeper's
column only breaks ties within a line). A value found nowhere counts as `unlocated`. Spans are what
the tool reported: detect-secrets 1.5.0 reports a GitHub token as "ghp" (its regex's capture group)
and a PEM key as "BEGIN ... PRIVATE KEY", so those count for the hit rate, not at IoU 0.5.

Writes OUTDIR/<tool>/<split>/scores.json (score_split(...).to_dict() plus tool, version,
wall_seconds, bytes_scanned, mb_per_s, unlocated, iou_threshold, merge_gap),
OUTDIR/<tool>/<split>/predictions.jsonl (one {"relpath", "spans"} line per labelled file, in label
order) and OUTDIR/summary.csv (one row per tool x split with the headline numbers).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from align_mamba.core.atomic import atomic_write_json, atomic_write_text
from align_mamba.core.cli import OneLineParser, flag_names, parse_with_params, setup_logging
from align_mamba.core.errors import BackendUnavailableError, DataIntegrityError, run_cli
from align_mamba.secrets.data import SECRET_SPLITS, TEST_SPLITS, load_secret_split
from align_mamba.secrets.score import SplitScores, match_spans, merge_spans, score_split
from align_mamba.secrets.settings import load_secrets
from align_mamba.secrets.spans import LabelledFile, Span

log = logging.getLogger("align_mamba.secrets.baselines")

INSTALL_HINT = "pip install -e '.[baselines]'"
SUMMARY_COLUMNS = [
    "span_precision",
    "span_recall",
    "span_f1",
    "hit_rate",
    "byte_precision",
    "byte_recall",
    "byte_f1",
    "false_alarms_per_mb",
    "n_true",
    "n_pred",
    "decoy_hits",
    "files",
    "bytes",
]


@dataclass(frozen=True)
class ScanResult:
    """One tool's scan of one split: predictions keyed by relpath (format = the tool's rule name)."""

    tool: str
    version: str
    predictions: dict[str, list[Span]]
    wall_seconds: float
    bytes_scanned: int
    mb_per_s: float | None  # None when the scan took no measurable time
    unlocated: int


@dataclass(frozen=True)
class Finding:
    """What a tool reported: 1-based line, value string, rule; column (characters) only breaks ties."""

    relpath: str
    line_num: int
    value: str | None
    rule: str
    score: float = 1.0
    column: int | None = None


def _line_starts(data: bytes) -> np.ndarray:
    """(lines,) byte offset of each line's first byte; lines end at b"\\n"."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return np.concatenate(([0], newlines + 1))


def locate_value(
    data: bytes, line_starts: np.ndarray, line_num: int, value: str | None, column: int | None = None
) -> tuple[int, int] | None:
    """Byte range of `value` (UTF-8) in line `line_num` of `data`, else in the whole file; None if absent.

    Several occurrences: the one nearest the anchor, the line's start plus `column` characters
    (just the line's start without a column, byte 0 for a line number outside the file).
    """
    needle = value.encode("utf-8", "surrogateescape") if value else b""
    if not needle:
        return None
    valid = 1 <= line_num <= len(line_starts)
    lo = int(line_starts[line_num - 1]) if valid else 0
    hi = int(line_starts[line_num]) if valid and line_num < len(line_starts) else len(data)
    anchor = lo
    if valid and column is not None:
        line = data[lo:hi].decode("utf-8", "surrogateescape")
        anchor += len(line[: max(column, 0)].encode("utf-8", "surrogateescape"))
    hits = _occurrences(data, needle, lo, hi) if valid else []
    hits = hits or _occurrences(data, needle, 0, len(data))
    if not hits:
        return None
    start = min(hits, key=lambda s: (abs(s - anchor), s))
    return start, start + len(needle)


def _occurrences(data: bytes, needle: bytes, lo: int, hi: int) -> list[int]:
    found, pos = [], data.find(needle, lo, hi)
    while pos >= 0:
        found.append(pos)
        pos = data.find(needle, pos + 1, hi)
    return found


def _scan_targets(split_dir: Path) -> list[Path]:
    """Every regular file under `split_dir/files`, sorted: what a directory scan reaches."""
    files_dir = split_dir / "files"
    if not files_dir.is_dir():
        raise DataIntegrityError(f"no files/ directory to scan in {split_dir}")
    return sorted(p for p in files_dir.rglob("*") if p.is_file())


def _to_result(
    tool: str, version: str, split_dir: Path, findings: list[Finding], wall: float, targets: list[Path]
) -> ScanResult:
    """Locate every finding; identical (start, end, rule) findings collapse to one span."""
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.relpath, []).append(finding)
    by_file: dict[str, dict[tuple[int, int, str], float]] = {}
    unlocated = 0
    for relpath in sorted(grouped):
        data = (split_dir / relpath).read_bytes()
        starts = _line_starts(data)
        spans = by_file.setdefault(relpath, {})
        for f in grouped[relpath]:
            where = locate_value(data, starts, f.line_num, f.value, f.column)
            if where is None:
                unlocated += 1
                continue
            key = (*where, f.rule)
            spans[key] = max(f.score, spans.get(key, f.score))
    scanned = sum(p.stat().st_size for p in targets)
    if unlocated:
        log.warning("%s: %d finding(s) whose value is not in the file", tool, unlocated)
    return ScanResult(
        tool=tool,
        version=version,
        wall_seconds=wall,
        bytes_scanned=scanned,
        mb_per_s=scanned / 1e6 / wall if wall > 0 else None,
        unlocated=unlocated,
        predictions={
            p: sorted(Span(s, e, rule, score) for (s, e, rule), score in spans.items()) for p, spans in by_file.items()
        },
    )


def tool_version(dist: str) -> str:
    """The installed version of `dist`; a missing tool is one line naming the install command."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailableError(f"{dist} is not installed: {INSTALL_HINT}") from None


def run_detect_secrets(split_dir: Path) -> ScanResult:
    """detect-secrets (Python API, default plugins and filters) over `split_dir/files`."""
    version = tool_version(TOOLS["detect-secrets"].dist)
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    split_dir = Path(split_dir)
    targets = _scan_targets(split_dir)
    start = time.perf_counter()
    # Explicit file list with root=split_dir: keys come back as "files/..." relpaths, and a dataset
    # inside a git checkout is not narrowed to tracked files (what its directory walk would do).
    secrets = SecretsCollection(root=str(split_dir))
    with default_settings():
        secrets.scan_files(*[str(p.relative_to(split_dir)) for p in targets])
    wall = time.perf_counter() - start
    findings = [Finding(Path(name).as_posix(), s.line_number, s.secret_value, s.type) for name, s in secrets]
    return _to_result("detect-secrets", version, split_dir, findings, wall, targets)


def run_credsweeper(split_dir: Path) -> ScanResult:
    """CredSweeper (its CLI, default rules and ML validation) over `split_dir/files`."""
    version = tool_version(TOOLS["credsweeper"].dist)
    split_dir = Path(split_dir).resolve()
    targets = _scan_targets(split_dir)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "credsweeper.json"
        # Scanned as the relative path "files" from the split directory: its ML validator reads the
        # path, so findings then do not depend on where the dataset lives.
        command = [
            sys.executable,
            "-m",
            "credsweeper",
            "--path",
            "files",
            "--save-json",
            str(report_path),
            "--no-stdout",
            "--log",
            "error",
        ]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=split_dir, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"credsweeper exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        report = json.loads(report_path.read_text())
    findings = [
        Finding(
            _relpath(split_dir, line["path"]),
            line["line_num"],
            line["value"],
            candidate["rule"],
            candidate["ml_probability"] if candidate["ml_probability"] is not None else 1.0,
            line["value_start"],
        )
        for candidate in report
        for line in candidate["line_data_list"]
    ]
    return _to_result("credsweeper", version, split_dir, findings, wall, targets)


def _relpath(split_dir: Path, reported: str) -> str:
    path = (split_dir / reported).resolve()
    if not path.is_relative_to(split_dir):
        raise DataIntegrityError(f"credsweeper reported a path outside {split_dir}: {reported}")
    return path.relative_to(split_dir).as_posix()


@dataclass(frozen=True)
class Tool:
    dist: str  # the PyPI distribution that provides it
    run: Callable[[Path], ScanResult]


TOOLS = {
    "detect-secrets": Tool("detect-secrets", run_detect_secrets),
    "credsweeper": Tool("credsweeper", run_credsweeper),
}


def _build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m align_mamba.secrets.baselines",
        description="Score baseline secret scanners on a secret-span dataset.",
    )

    def option(name: str, **kwargs) -> None:
        parser.add_argument(*flag_names(name), dest=name, **kwargs)

    option("data", type=Path, required=True, help="dataset directory with <split>/files and <split>/labels.jsonl")
    option("out", type=Path, required=True, help="output directory")
    option("splits", nargs="+", choices=SECRET_SPLITS, default=list(TEST_SPLITS), help="default: %(default)s")
    option("tools", nargs="+", choices=list(TOOLS), default=list(TOOLS), help="default: %(default)s")
    option("iou_threshold", type=float, default=0.5, help="span match IoU (default 0.5)")
    option("merge_gap", type=int, default=2, help="merge predicted spans this close, in bytes (default 2)")
    return parser


def _write_run(
    out_dir: Path, files: list[LabelledFile], result: ScanResult, scores: SplitScores, settings: dict
) -> dict:
    """scores.json and predictions.jsonl of one tool x split; returns its run fields."""
    run_info = {
        "tool": result.tool,
        "version": result.version,
        "wall_seconds": result.wall_seconds,
        "bytes_scanned": result.bytes_scanned,
        "mb_per_s": result.mb_per_s,
        "unlocated": result.unlocated,
    }
    atomic_write_json(out_dir / "scores.json", {**scores.to_dict(), **run_info, **settings})
    atomic_write_text(
        out_dir / "predictions.jsonl",
        "".join(
            json.dumps(
                {"relpath": f.relpath, "spans": [asdict(s) for s in result.predictions.get(f.relpath, [])]},
                sort_keys=True,
            )
            + "\n"
            for f in files
        ),
    )
    return run_info


def _settings(args) -> dict:
    settings = load_secrets(args.params)
    return {"splits": list(settings.evaluate.splits), "tools": list(settings.baselines.tools)}


def main(argv: list[str] | None = None) -> int:
    """Scan each split with each tool, score it, write the per-run files and the summary."""
    args = parse_with_params(_build_parser(), argv, _settings)
    setup_logging(args.log)
    tools, splits = list(dict.fromkeys(args.tools)), list(dict.fromkeys(args.splits))
    # Bad settings or a missing tool fail here, not after minutes of scanning.
    merge_spans([], args.merge_gap)
    match_spans([], [], args.iou_threshold)
    for name in tools:
        tool_version(TOOLS[name].dist)
    labels = {split: load_secret_split(args.data, split) for split in splits}
    settings = {"iou_threshold": args.iou_threshold, "merge_gap": args.merge_gap}
    rows = []
    for name, split in tqdm(list(product(tools, splits)), desc="baselines", unit="scan", disable=None):
        result = TOOLS[name].run(args.data / split)
        scores = score_split(labels[split], result.predictions, args.iou_threshold, args.merge_gap)
        run_info = _write_run(args.out / name / split, labels[split], result, scores, settings)
        headline = {key: getattr(scores, key) for key in SUMMARY_COLUMNS}
        rows.append({"tool": name, "split": split, **run_info, **headline})
        log.info(
            "%s on %s: span F1 %.3f, hit rate %.3f, %.2f MB/s",
            name,
            split,
            scores.span_f1,
            scores.hit_rate,
            result.mb_per_s or 0.0,
        )
    atomic_write_text(args.out / "summary.csv", pd.DataFrame(rows).to_csv(index=False))
    log.info("wrote %d scan(s) to %s", len(rows), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
