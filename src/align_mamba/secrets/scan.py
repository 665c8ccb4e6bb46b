"""`align-mamba scan PATH...`: find secrets in files with a trained byte tagger.

Inputs: files and directories. Directories are walked recursively in sorted order; the version
control metadata directories `.git`, `.hg` and `.svn` are not entered (nothing else is skipped by
name), symlinked directories inside a walk are not followed (reported as skipped: loops), symlinked
files are read through. A file is scanned when it is a regular file of at most --max-bytes and
looks like text; otherwise it is reported as skipped. Text rule (like git/grep): the first 8 KB hold
no NUL byte, and either decode as UTF-8 (a character cut by the 8 KB boundary is fine) or hold at
most 30% bytes outside printable ASCII and \\t \\n \\r \\f \\v \\b ESC (so Latin-1 text is scanned,
compressed or image data is not). A path that cannot be read (missing, broken symlink, permission
denied, unlistable directory) is an error: one warning on stderr, listed under "errors", and the
scan goes on with the other paths.

Checkpoint: --checkpoint, else, inside the project (a params.yaml in the current directory naming
`secrets.scan_tagger`), that tagger's `runs/secrets/<name>/model.pt` if it has been trained, else the
tagger shipped inside the package (align_mamba/secrets/models/bimamba.pt); the one used is named on
stderr, with the inference path (on the CPU, the linear-time SSD scan). Threshold and chunking default to the checkpoint's own settings; the whole file
is read (up to --max-bytes) and runs through the chunked tagger, whose memory is bounded by the chunk
length, not the file size.

Human output: one line per finding on stdout,
    path:line: [start,end) format score=0.97 AKIA…(20)
line = 1-based line of the span's first byte, [start, end) = half-open byte offsets into the file.
The path is printed as is when it is plain; otherwise (as git quotes paths) it is put in double quotes
with C-style escapes, so a finding is always one line and the path's bytes can be recovered: `\\\\` and
`\\"`; \\a \\b \\t \\n \\v \\f \\r; \\xNN for any other ASCII control character (and DEL) and for each byte of
the name that is not UTF-8; \\uXXXX for the Unicode characters that some readers take as line breaks
(U+0080-U+009F, U+2028, U+2029). A path holding any of these, or a backslash or a double quote, is
quoted; other UTF-8 characters are printed unescaped. `cannot read` warnings quote paths the same way.
The value is masked unless --show-secrets: its first 4 characters (fewer for short values: at most
a quarter of it shows), `…` and its length in bytes; control characters are escaped (\\n) so each
finding stays one line. A summary line goes to stderr.

--json prints one JSON document instead (schema, all keys always present):
    {"findings": [{"path": str, "line": int, "start": int, "end": int, "format": str,
                   "score": float, "value": str}],        # value masked as above unless --show-secrets
     "skipped": [{"path": str, "reason": str}],           # binary, too large, not a regular file
     "errors": [{"path": str, "message": str}],           # unreadable paths
     "scanned_files": int, "scanned_bytes": int,
     "checkpoint": str, "backend": str, "device": str,
     "gate": {"enabled": bool, "margin": int, "model_bytes": int}}  # model_bytes: bytes the tagger scored
With the gate (on by default on the CPU unless --threshold is below the checkpoint's, --no-gate /
--gate to choose; secrets/gate.py) the tagger
reads only candidate tokens (mixed-case or digit-bearing runs of >= 20 key-alphabet bytes, PEM and
URL-password markers) with --gate-margin bytes of context each side; other bytes are not secrets.
A gated CPU scan runs torch on one thread (--threads to change): its small forwards gain little from a
second thread and stall at every op when another process holds a core.
Values are the span's bytes decoded as UTF-8 (invalid bytes as \\xNN escapes). Paths are the names as
given and as listed; a file name that is not UTF-8 keeps its odd bytes as \\udcNN escapes (Python's
surrogateescape: `os.fsencode(path)` gives the bytes back).

Exit codes, as gitleaks: 1 when anything is found (even if some paths failed), 0 when nothing is
found; unreadable paths alone do not fail a scan that read other files (gitleaks logs them and goes
on). 2 on error: bad flags, no or a broken checkpoint, or nothing scanned while some path failed
(no readable input at all).
"""

from __future__ import annotations

import codecs
import importlib.resources
import json
import logging
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from align_mamba.core.backends import BACKENDS, resolve_device
from align_mamba.core.cli import OneLineParser, flag_names, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.secrets.gate import DEFAULT_MARGIN, candidate_regions
from align_mamba.secrets.infer import (
    GATED_CPU_THREADS,
    WEIGHTS,
    load_tagger,
    predict_spans,
    scan_threads,
    torch_threads,
    tune_tagger,
)
from align_mamba.secrets.spans import Span

log = logging.getLogger("align_mamba.secrets.scan")

VCS_DIRS = frozenset({".git", ".hg", ".svn"})
SNIFF_BYTES = 8192
MAX_ODD_FRACTION = 0.3
TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\f\v\b\x1b"
DEFAULT_MAX_BYTES = 64 * 2**20
SHIPPED_CHECKPOINT = "models/bimamba.pt"  # package data of align_mamba.secrets
# Control characters shown as Python escapes, so one finding is one output line.
_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(32), 127)}
# How a quoted path spells each character that needs it (see the module docstring); the rest of
# U+0000-U+001F and DEL become \xNN, undecodable bytes (surrogateescape U+DC80-U+DCFF) \xNN of the byte.
_PATH_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
}
_LINE_BREAKERS = frozenset(map(chr, (*range(0x80, 0xA0), 0x2028, 0x2029)))


@dataclass(frozen=True)
class ScanOptions:
    """How files are read and decoded; None = the checkpoint's own setting."""

    threshold: float | None = None
    chunk_len: int | None = None
    overlap: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    show_secrets: bool = False
    gate: bool | None = None  # read only candidate regions (gate.py); None: see gate_on
    gate_margin: int = DEFAULT_MARGIN
    threads: int | None = None  # torch intra-op threads; None: GATED_CPU_THREADS with the gate on the CPU

    def __post_init__(self):
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be in [0, 1], got {self.threshold}")
        if self.chunk_len is not None and self.chunk_len < 1:
            raise ConfigError(f"--chunk-len must be >= 1, got {self.chunk_len}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"--overlap must be >= 0, got {self.overlap}")
        if self.max_bytes < 1:
            raise ConfigError(f"--max-bytes must be >= 1, got {self.max_bytes}")
        if self.gate_margin < 0:
            raise ConfigError(f"--gate-margin must be >= 0, got {self.gate_margin}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")

    def threads_for(self, device: torch.device, gate: bool) -> int | None:
        """Intra-op threads for the scan (infer.scan_threads)."""
        return scan_threads(self.threads, gate, device)

    def gate_on(self, device: torch.device, checkpoint_threshold: float) -> bool:
        """Whether the candidate gate runs: as asked, else on the CPU (where the model is the cost) unless
        --threshold is below the checkpoint's. The gate was checked to lose no span at the checkpoint's
        threshold; a higher one flags a subset of those bytes, a lower one may flag bytes it never shows."""
        if self.gate is not None:
            return self.gate
        return device.type == "cpu" and (self.threshold is None or self.threshold >= checkpoint_threshold)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    start: int
    end: int
    format: str
    score: float
    value: str


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class PathError:
    path: str
    message: str


@dataclass
class ScanReport:
    """Everything one scan found; `to_json()` is the --json document."""

    checkpoint: str
    backend: str
    device: str
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[PathError] = field(default_factory=list)
    scanned_files: int = 0
    scanned_bytes: int = 0
    gate: bool = False
    gate_margin: int = DEFAULT_MARGIN
    model_bytes: int = 0  # bytes whose scores the model computed (all scanned bytes without the gate)

    @property
    def exit_code(self) -> int:
        if self.findings:
            return 1
        return 2 if self.errors and self.scanned_files == 0 else 0

    def to_json(self) -> dict:
        return {
            "findings": [asdict(f) for f in self.findings],
            "skipped": [asdict(s) for s in self.skipped],
            "errors": [asdict(e) for e in self.errors],
            "scanned_files": self.scanned_files,
            "scanned_bytes": self.scanned_bytes,
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "device": self.device,
            "gate": {"enabled": self.gate, "margin": self.gate_margin, "model_bytes": self.model_bytes},
        }


def shipped_checkpoint() -> Path:
    """The tagger that ships inside the package; ConfigError if the install lacks it."""
    path = Path(str(importlib.resources.files("align_mamba.secrets") / SHIPPED_CHECKPOINT))
    if not path.is_file():
        raise ConfigError(f"no checkpoint: pass --checkpoint PATH (this install lacks the shipped tagger {path})")
    return path


def project_checkpoint(root: Path) -> Path | None:
    """`runs/secrets/<secrets.scan_tagger>/model.pt` under `root` when root/params.yaml names one and it
    exists, else None (no project here, or its scan tagger not trained yet)."""
    params = root / "params.yaml"
    if not params.is_file():
        return None
    try:
        name = (yaml.safe_load(params.read_text()) or {}).get("secrets", {}).get("scan_tagger")
    except (OSError, yaml.YAMLError, AttributeError):  # someone else's params.yaml: not ours to judge
        return None
    path = root / "runs" / "secrets" / str(name) / "model.pt"
    return path if isinstance(name, str) and path.is_file() else None


def default_checkpoint(root: Path) -> tuple[Path, str]:
    """(checkpoint, why it was chosen) when --checkpoint is not given: the project's scan tagger, else the shipped one."""
    path = project_checkpoint(root)
    if path is not None:
        return path, "params.yaml secrets.scan_tagger"
    return shipped_checkpoint(), "the tagger shipped with align-mamba"


def binary_reason(data: bytes) -> str | None:
    """Why the file `data` is binary (judged on its first 8 KB), or None for text."""
    sample = data[:SNIFF_BYTES]
    if b"\x00" in sample:
        return "binary (NUL byte in the first 8 KB)"
    try:  # a multi-byte character cut by the sniff window is not an error unless the file ends there
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=len(data) <= SNIFF_BYTES)
        return None
    except UnicodeDecodeError:
        pass
    odd = len(sample.translate(None, TEXT_BYTES))
    if odd > MAX_ODD_FRACTION * len(sample):
        return f"binary (not UTF-8, {odd / len(sample):.0%} non-text bytes in the first 8 KB)"
    return None


def _os_message(path: Path, err: OSError) -> str:
    if isinstance(err, FileNotFoundError) and path.is_symlink():
        return f"broken symlink (target {os.readlink(path)} does not exist)"
    return err.strerror or str(err)


def _walk(directory: Path):
    """(path, None) for each file under `directory`, sorted, or (path, Skipped | PathError)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as err:
        yield directory, PathError(str(directory), f"cannot list directory: {_os_message(directory, err)}")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in VCS_DIRS:
                yield from _walk(path)
        elif entry.is_symlink() and path.is_dir():
            yield path, Skipped(str(path), "symlink to a directory (not followed)")
        else:
            yield path, None


def collect_files(paths: list[Path]):
    """(path, None | Skipped | PathError) for every file under `paths`, each file once, in order."""
    seen = set()
    for root in paths:
        if not os.path.lexists(root):
            yield root, PathError(str(root), "no such file or directory")
            continue
        for path, problem in _walk(root) if root.is_dir() else [(root, None)]:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                yield path, problem


def read_text_file(path: Path, max_bytes: int) -> bytes | Skipped:
    """The file's bytes, or why it is skipped; OSError when it cannot be read."""
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        return Skipped(str(path), "not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)  # one extra byte detects a file that grew past the limit
    if len(data) > max_bytes:
        return Skipped(str(path), f"larger than --max-bytes ({max(info.st_size, len(data))} > {max_bytes} bytes)")
    reason = binary_reason(data)
    return Skipped(str(path), reason) if reason else data


def line_numbers(data: bytes, offsets: list[int]) -> list[int]:
    """1-based line of each byte offset: one more than the newlines before it."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)  # (n_newlines,)
    return (np.searchsorted(newlines, np.asarray(offsets, dtype=np.int64), side="left") + 1).tolist()


def display_value(raw: bytes, show: bool) -> str:
    """The secret as text, or masked: at most its first 4 characters (a quarter of short ones)."""
    text = raw.decode("utf-8", errors="backslashreplace")
    if show:
        return text
    keep = min(4, len(text) // 4)
    return f"{text[:keep]}…({len(raw)})"


def findings_for(path: str, data: bytes, spans: list[Span], show: bool) -> list[Finding]:
    """One Finding per predicted span of the file `data`, in span order."""
    spans = sorted(spans)
    lines = line_numbers(data, [span.start for span in spans])
    return [
        Finding(
            path,
            line,
            span.start,
            span.end,
            span.format,
            round(float(span.score), 4),
            display_value(data[span.start : span.end], show),
        )
        for span, line in zip(spans, lines)
    ]


def _path_char(char: str) -> str:
    code = ord(char)
    if char in _PATH_ESCAPES:
        return _PATH_ESCAPES[char]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, carried by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if char in _LINE_BREAKERS:
        return f"\\u{code:04x}"
    return char


def quote_path(path: str) -> str:
    """`path` as one printable line: unchanged when plain, else double-quoted with C-style escapes.

    Takes the path as Python holds it (a name that is not UTF-8 carries its bytes as surrogateescape
    code points, as os.listdir returns them). The rules are in the module docstring.
    """
    text = os.fsencode(path).decode("utf-8", errors="surrogateescape")
    quoted = "".join(map(_path_char, text))
    return text if quoted == text else f'"{quoted}"'


def format_finding(finding: Finding) -> str:
    """`path:line: [start,end) format score=0.97 value`, one line whatever the path or value holds."""
    return (
        f"{quote_path(finding.path)}:{finding.line}: [{finding.start},{finding.end}) {finding.format} "
        f"score={finding.score:.2f} {finding.value.translate(_ESCAPES)}"
    )


def scan_paths(
    paths: list[Path], model, meta: dict, device: torch.device, options: ScanOptions, checkpoint: Path
) -> ScanReport:
    """Scan every file under `paths` with the tagger `model` loaded from `checkpoint` (meta: load_tagger's)."""
    gate = options.gate_on(device, meta["threshold"])
    report = ScanReport(str(checkpoint), meta["backend"], str(device), gate=gate, gate_margin=options.gate_margin)
    settings = {"threshold": options.threshold, "chunk_len": options.chunk_len, "overlap": options.overlap}
    settings = {key: meta[key] if value is None else value for key, value in settings.items()}
    settings["min_len"] = meta["min_span_len"]
    targets = list(collect_files(paths))
    with torch_threads(options.threads_for(device, gate)):
        for path, outcome in tqdm(targets, desc="scan", unit="file", disable=None):
            _scan_one(report, path, outcome, model, device, options, settings)
    return report


def _scan_one(
    report: ScanReport, path: Path, outcome, model, device: torch.device, options: ScanOptions, settings: dict
):
    """Read and scan one collected path into `report` (outcome: collect_files' None | Skipped | PathError)."""
    if outcome is None:  # a file to read: its bytes, or why not
        try:
            outcome = read_text_file(path, options.max_bytes)
        except OSError as err:
            outcome = PathError(str(path), _os_message(path, err))
    if isinstance(outcome, PathError):
        log.warning("cannot read %s: %s", quote_path(outcome.path), outcome.message)
        report.errors.append(outcome)
    elif isinstance(outcome, Skipped):
        report.skipped.append(outcome)
    else:
        regions = candidate_regions(outcome, options.gate_margin) if report.gate else [(0, len(outcome))]
        spans = predict_spans(model, outcome, device, **settings, regions=regions) if regions else []
        report.model_bytes += sum(end - start for start, end in regions)
        report.findings.extend(findings_for(str(path), outcome, spans, options.show_secrets))
        report.scanned_files += 1
        report.scanned_bytes += len(outcome)


def json_document(report: ScanReport) -> str:
    """The --json text; a lone surrogate (a non-UTF-8 byte of a file name) is written as a \\udcNN escape.

    json.dumps(ensure_ascii=False) would leave it raw, which stdout cannot encode as UTF-8.
    """
    text = json.dumps(report.to_json(), indent=2, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda match: f"\\u{ord(match.group()):04x}", text)


def build_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        description="Find secrets in files with a trained byte tagger "
        "(exit 1 when anything is found, 0 when clean, 2 on error).",
    )
    parser.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="files and directories (recursive)")

    def option(name: str, **kwargs) -> None:
        parser.add_argument(*flag_names(name), dest=name, **kwargs)

    option(
        "checkpoint",
        type=Path,
        help="tagger checkpoint (default: the project's secrets.scan_tagger if trained, else the shipped one)",
    )
    option("device", default="auto", choices=("auto", "cpu", "cuda"))
    option("backend", default="auto", choices=BACKENDS)
    option("threshold", type=float, help="p(secret) a byte needs (default: the checkpoint's)")
    option("chunk_len", type=int, help="bytes per inference chunk (default: the checkpoint's)")
    option("overlap", type=int, help="context bytes on each side of a chunk (default: the checkpoint's)")
    option("json", action="store_true", help="print one JSON document (schema: see the module docstring)")
    option("show_secrets", action="store_true", help="print secret values in full (masked by default)")
    option("max_bytes", type=int, default=DEFAULT_MAX_BYTES, help="skip larger files (default 64 MiB)")
    gate = parser.add_mutually_exclusive_group()
    gate.add_argument(
        "--gate",
        dest="gate",
        action="store_const",
        const=True,
        help="run the tagger only around candidate tokens (default on the CPU; see secrets/gate.py)",
    )
    gate.add_argument(
        *flag_names("no_gate"), dest="gate", action="store_const", const=False, help="run the tagger on every byte"
    )
    option(
        "gate_margin",
        type=int,
        default=DEFAULT_MARGIN,
        help=f"context bytes the gate keeps on each side of a candidate (default {DEFAULT_MARGIN})",
    )
    option(
        "threads",
        type=int,
        help=f"torch intra-op threads (default: {GATED_CPU_THREADS} for a gated CPU scan, else torch's own)",
    )
    option(
        "weights",
        default="float32",
        choices=WEIGHTS,
        help="bfloat16: run the tagger in bf16, faster on a GPU (default: fp32 weights, bf16 autocast on cuda)",
    )
    option(
        "ssd_chunk_size",
        type=int,
        help="run the Mamba-2 chunked SSD with this block length (default: the CPU's linear-time scan, "
        "the checkpoint's chunked SSD elsewhere)",
    )
    return parser


def _summary(report: ScanReport, seconds: float) -> str:
    reasons = {}
    for skipped in report.skipped:
        kind = skipped.reason.split(" (")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    detail = f" ({', '.join(f'{k}: {n}' for k, n in sorted(reasons.items()))})" if reasons else ""
    return (
        f"scanned {report.scanned_files} files ({report.scanned_bytes} bytes) in {seconds:.1f} s: "
        f"{len(report.findings)} findings, {len(report.skipped)} skipped{detail}, "
        f"{len(report.errors)} unreadable"
    )


def main(argv: list[str] | None = None, prog: str = "align-mamba scan") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log)
    options = ScanOptions(
        args.threshold,
        args.chunk_len,
        args.overlap,
        args.max_bytes,
        args.show_secrets,
        args.gate,
        args.gate_margin,
        args.threads,
    )
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint, why = default_checkpoint(Path.cwd())
        log.info("using checkpoint %s (%s)", checkpoint, why)
    elif not checkpoint.is_file():
        raise ConfigError(f"checkpoint not found: {checkpoint}")
    device = resolve_device(args.device)
    model, meta = load_tagger(checkpoint, device, backend=args.backend)
    tuned = tune_tagger(model, args.weights, args.ssd_chunk_size)
    inference = "chunked SSD" if args.ssd_chunk_size is not None else meta["inference_path"]
    gated = options.gate_on(device, meta["threshold"])
    threads = options.threads_for(device, gated) or torch.get_num_threads()
    gate = (
        f"candidate gate (margin {options.gate_margin}), {threads} thread(s)"
        if gated
        else f"no gate, {threads} thread(s)"
    )
    log.info("inference: %s on %s, %s, %s%s", meta["backend"], device, inference, gate, f", {tuned}" if tuned else "")
    started = time.perf_counter()
    report = scan_paths(args.paths, model, meta, device, options, checkpoint)
    if args.json:
        print(json_document(report))
    else:
        for finding in report.findings:
            print(format_finding(finding))
    log.info(_summary(report, time.perf_counter() - started))
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
