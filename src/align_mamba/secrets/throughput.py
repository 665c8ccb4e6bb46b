"""Scan throughput of the byte tagger against baseline scanners: `python -m align_mamba.secrets.throughput --out CSV`.

Files: for each size in --sizes-mb (MB = 2**20 bytes) and each carrier kind in --kinds (default a
log / python / yaml mix), one file of exactly that size drawn by the secret-dataset generator
(`draw_file`, no length jitter, every format, 4-8 planted secrets), written alone in its own
directory `WORK/<kind>-<size>/files/<name>`, the layout the baseline adapters scan. Same seed ->
same bytes.

Timing (median of repeats, the tools read the same files):
  tagger     loaded once (not timed); per file `--warmup` untimed scans (CUDA/Triton start-up),
             then `--repeats` timed ones: read the file + the candidate gate (on the CPU by default, as
             `align-mamba scan`; --no-gate / --gate) + `predict_spans` (the chunked path of
             `align-mamba scan`), with torch.cuda.synchronize before each clock read.
  baselines  `--baseline-repeats` calls of the adapter in align_mamba.secrets.baselines, each a
             fresh scan as its users run it (CredSweeper: its CLI, start-up included;
             detect-secrets: its Python API); wall time around the whole call.

Inference settings of the tagger that change its speed, not the function it computes (up to
rounding), to find what pays on a GPU (infer.tune_tagger): --weights bfloat16 casts the model to bf16
(default: fp32 weights under bf16 autocast on cuda), --ssd-chunk-size sets the block length of every
Mamba-2 mixer's chunked scan (default: the checkpoint's). Each run names its non-default settings in
`settings`; `backend` reads "kernels (fused)" where mamba-ssm runs its causal-conv1d fused path.

Writes --out (CSV, atomically): system, version, device, backend, settings, kind, size_mb, bytes,
seconds, mb_per_s, vs_credsweeper (mb_per_s over CredSweeper's on the same file: >= 1 is as fast or
faster), findings (spans reported, merged as the scoring merges them: any two at most 2 bytes apart,
so one PEM block tagged line by line is one finding), planted (secrets in the file); prints the same table. Default:
files of 32 KB, 1 MB and 8 MB, the checkpoint `align-mamba scan` would take, the tagger on the CPU
through its automatically selected CPU path (named in `settings`).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

import align_mamba
from align_mamba.core.atomic import atomic_write_text
from align_mamba.core.backends import BACKENDS, resolve_device, runs_fused
from align_mamba.core.cli import OneLineParser, flag_names, parse_with_params, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.secrets.baselines import TOOLS, tool_version
from align_mamba.secrets.data import CARRIER_KINDS, SecretDataConfig, draw_file
from align_mamba.secrets.data.config import MAX_LENGTH, MIN_LENGTH
from align_mamba.secrets.data.generate import SeenValues
from align_mamba.secrets.gate import DEFAULT_MARGIN, candidate_regions
from align_mamba.secrets.infer import (
    WEIGHTS,
    load_tagger,
    predict_spans,
    scan_threads,
    torch_threads,
    tune_tagger,
)
from align_mamba.secrets.scan import default_checkpoint
from align_mamba.secrets.score import merge_spans
from align_mamba.secrets.settings import load_secrets

log = logging.getLogger("align_mamba.secrets.throughput")

MB = 2**20
COLUMNS = [
    "system",
    "version",
    "device",
    "backend",
    "settings",
    "kind",
    "size_mb",
    "bytes",
    "seconds",
    "mb_per_s",
    "vs_credsweeper",
    "findings",
    "planted",
]
REFERENCE_TOOL = "credsweeper"  # vs_credsweeper: a row's mb_per_s over CredSweeper's on the same file
DEFAULT_KINDS = ("log", "python", "yaml")
SECRETS_PER_FILE = (4, 8)


@dataclass(frozen=True)
class BenchFile:
    """One generated file, alone in `directory/files/`."""

    kind: str
    size_mb: float
    directory: Path
    path: Path
    planted: int  # secrets the generator planted


@dataclass(frozen=True)
class Row:
    system: str
    version: str
    device: str
    backend: str
    settings: str  # the tagger's non-default inference settings, "" for as saved (and for baselines)
    kind: str
    size_mb: float
    bytes: int
    seconds: float
    mb_per_s: float
    vs_credsweeper: float  # NaN when CredSweeper was not timed
    findings: int
    planted: int


def size_bytes(size_mb: float) -> int:
    """Bytes of a `size_mb` file; ConfigError outside what the generator can draw."""
    n = round(size_mb * MB)
    if not MIN_LENGTH <= n <= MAX_LENGTH:
        raise ConfigError(
            f"--sizes-mb: each size must give {MIN_LENGTH}..{MAX_LENGTH} bytes, got {size_mb} MB ({n} bytes)"
        )
    return n


def build_files(work_dir: Path, sizes_mb: list[float], kinds: list[str], seed: int) -> list[BenchFile]:
    """One file of exactly each size for each kind, each in its own directory; deterministic in `seed`."""
    files, seen = [], SeenValues()
    for index, (size_mb, kind) in enumerate((s, k) for s in sizes_mb for k in kinds):
        n = size_bytes(size_mb)
        config = SecretDataConfig(
            seed=seed,
            length_buckets=(n,),
            train_max_length=n,
            length_jitter=0.0,
            kinds=(kind,),
            secrets_per_file=SECRETS_PER_FILE,
            heldout_formats=(),
            unseen_files=0,
        )
        labels, data = draw_file(config, "test", index, seen)
        directory = work_dir / f"{kind}-{n}"
        path = directory / labels.relpath  # files/<NNNN>_<name>
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files.append(BenchFile(kind, size_mb, directory, path, len(labels.spans)))
    return files


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scan_file(model, meta: dict, device: torch.device, path: Path, batch_chunks: int) -> int:
    """Findings (merged spans) of reading `path` and scanning it through the chunked tagger, as `align-mamba scan` does:
    only the candidate gate's regions when meta["gate_margin"] is set (gate.candidate_regions), else every byte."""
    settings = {key: meta[key] for key in ("chunk_len", "overlap", "threshold")}
    data = path.read_bytes()
    margin = meta.get("gate_margin")
    regions = None if margin is None else candidate_regions(data, margin)
    if regions == []:
        return 0
    spans = predict_spans(
        model, data, device, batch_chunks=batch_chunks, min_len=meta["min_span_len"], regions=regions, **settings
    )
    return len(merge_spans(spans))


def time_tagger(
    model, meta: dict, device: torch.device, path: Path, repeats: int, warmup: int, batch_chunks: int
) -> tuple[float, int]:
    """(median seconds, spans found) of `scan_file`."""
    for _ in range(warmup):
        scan_file(model, meta, device, path, batch_chunks)
    seconds, found = [], 0
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        found = scan_file(model, meta, device, path, batch_chunks)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), found


def profile_tagger(model, meta: dict, device: torch.device, path: Path, batch_chunks: int, out: Path) -> None:
    """One more scan of `path` under torch.profiler: its 30 costliest operators (own time on the device
    on cuda, on the CPU otherwise) to `out`, so the next speed-up targets what the time goes to."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (device.type == "cuda")
    with profile(activities=activities) as profiler:
        scan_file(model, meta, device, path, batch_chunks)
        _synchronize(device)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    header = f"one scan of {path.name} ({path.stat().st_size} bytes) on {device}, batch_chunks {batch_chunks}\n"
    atomic_write_text(out, header + profiler.key_averages().table(sort_by=sort, row_limit=30) + "\n")


def time_baseline(tool: str, directory: Path, repeats: int) -> tuple[float, int, str]:
    """(median seconds, spans found, tool version) of `repeats` scans of `directory/files`."""
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = TOOLS[tool].run(directory)
        seconds.append(time.perf_counter() - start)
    found = sum(len(merge_spans(spans)) for spans in result.predictions.values())
    return statistics.median(seconds), found, result.version


def _row(
    system: str, version: str, device: str, backend: str, settings: str, file: BenchFile, seconds: float, findings: int
) -> Row:
    n = file.path.stat().st_size
    return Row(
        system,
        version,
        device,
        backend,
        settings,
        file.kind,
        file.size_mb,
        n,
        round(seconds, 6),
        float(f"{n / MB / seconds:.6g}"),
        float("nan"),
        findings,
        file.planted,
    )


def with_ratios(rows: list[Row]) -> list[Row]:
    """Each row with vs_credsweeper = its throughput / CredSweeper's on the same file (NaN if not timed)."""
    reference = {(r.kind, r.bytes): r.mb_per_s for r in rows if r.system == REFERENCE_TOOL}
    return [
        replace(
            r,
            vs_credsweeper=round(r.mb_per_s / reference[(r.kind, r.bytes)], 4)
            if (r.kind, r.bytes) in reference
            else float("nan"),
        )
        for r in rows
    ]


def measure(
    files: list[BenchFile],
    checkpoint: Path | None,
    device_name: str,
    backend: str,
    tools: list[str],
    repeats: int,
    warmup: int,
    baseline_repeats: int,
    overrides: dict,
    batch_chunks: int,
    profile_out: Path | None = None,
    weights: str = "float32",
    ssd_chunk_size: int | None = None,
    gate: bool | None = None,
    gate_margin: int = DEFAULT_MARGIN,
    threads: int | None = None,
) -> list[Row]:
    """Time every system on every file: the tagger first (unless `checkpoint` is None), then each baseline.

    profile_out: also profile one tagger scan of the largest file (after the timed ones) into this file.
    weights, ssd_chunk_size: the tagger's inference settings (`tune_tagger`). gate: the scan's candidate
    gate with `gate_margin` bytes of context (None: on on the CPU, as `align-mamba scan`); threads: torch's
    intra-op threads for the tagger (None: as `align-mamba scan`, one for a gated CPU scan).
    """
    if checkpoint is not None:
        device = resolve_device(device_name)
        model, meta = load_tagger(checkpoint, device, backend=backend)
        tuned = tune_tagger(model, weights, ssd_chunk_size)
        inference = "" if ssd_chunk_size is not None else meta["inference_path"]  # "ssd chunk N" says it
        gated = device.type == "cpu" if gate is None else gate
        gate_label = f"candidate gate (margin {gate_margin})" if gated else ""
        threads = scan_threads(threads, gated, device)
        thread_label = "" if threads is None else f"{threads} thread{'s' * (threads > 1)}"
        settings = ", ".join(label for label in (inference, tuned, gate_label, thread_label) if label)
        backend_label = f"{meta['backend']} (fused)" if runs_fused(model) else meta["backend"]
        meta = {**meta, **{k: v for k, v in overrides.items() if v is not None}, "gate_margin": None}
        if gated:
            meta["gate_margin"] = gate_margin
        tagger = f"align-mamba {align_mamba.__version__} ({checkpoint.parent.name})"
    rows = []
    cases = [(system, f) for system in ["tagger"] * (checkpoint is not None) + tools for f in files]
    for system, file in tqdm(cases, desc="throughput", unit="scan", disable=None):
        if system == "tagger":
            with torch_threads(threads):
                seconds, found = time_tagger(model, meta, device, file.path, repeats, warmup, batch_chunks)
            rows.append(_row("tagger", tagger, str(device), backend_label, settings, file, seconds, found))
        else:
            seconds, found, version = time_baseline(system, file.directory, baseline_repeats)
            rows.append(_row(system, version, "cpu", "-", "", file, seconds, found))
        log.info("%s on %s (%d bytes): %.3f s, %d findings", system, file.path.name, rows[-1].bytes, seconds, found)
    if checkpoint is not None and profile_out is not None:
        largest = max(files, key=lambda f: f.path.stat().st_size)
        with torch_threads(threads):
            profile_tagger(model, meta, device, largest.path, batch_chunks, profile_out)
        log.info("profile of one scan of %s written to %s", largest.path.name, profile_out)
    return with_ratios(rows)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m align_mamba.secrets.throughput", description=__doc__.split("\n")[0])

    def option(name: str, **kwargs) -> None:
        parser.add_argument(*flag_names(name), dest=name, **kwargs)

    option(
        "checkpoint",
        type=Path,
        help="tagger checkpoint (default: the one `align-mamba scan` takes: the "
        "project's secrets.scan_tagger if trained, else the shipped one)",
    )
    option("no_tagger", action="store_true", help="time the baselines alone (on files another run gave the tagger)")
    option("out", type=Path, required=True, help="CSV to write")
    option("sizes_mb", type=float, nargs="+", default=[1 / 32, 1.0, 8.0], help="file sizes in MB (2**20 bytes)")
    option("kinds", nargs="+", choices=CARRIER_KINDS, default=list(DEFAULT_KINDS), help="carrier kinds")
    option("tools", nargs="*", choices=list(TOOLS), default=list(TOOLS), help="baselines (none: tagger only)")
    option("device", default="auto", choices=("auto", "cpu", "cuda"))
    option("backend", default="auto", choices=BACKENDS)
    option("seed", type=int, default=0)
    option("repeats", type=int, default=3, help="timed tagger scans per file (median)")
    option("warmup", type=int, default=1, help="untimed tagger scans per file first")
    option("baseline_repeats", type=int, default=1, help="timed scans per file and baseline (median)")
    option("chunk_len", type=int, help="default: the checkpoint's")
    option("overlap", type=int, help="default: the checkpoint's")
    option("batch_chunks", type=int, default=8, help="chunks per forward pass")
    option("weights", default="float32", choices=WEIGHTS, help="the tagger's weight dtype (see above)")
    option("ssd_chunk_size", type=int, help="block length of the Mamba-2 chunked scan (default: the checkpoint's)")
    gate = parser.add_mutually_exclusive_group()
    gate.add_argument("--gate", dest="gate", action="store_const", const=True, help="the scan's candidate gate")
    gate.add_argument(
        *flag_names("no_gate"),
        dest="gate",
        action="store_const",
        const=False,
        help="the tagger on every byte (default: the gate on the CPU, as `align-mamba scan`)",
    )
    option("gate_margin", type=int, default=DEFAULT_MARGIN, help="the gate's context bytes each side")
    option("threads", type=int, help="the tagger's torch threads (default: as `align-mamba scan`)")
    option("work_dir", type=Path, help="keep the generated files here (default: a temporary directory)")
    option("profile", type=Path, help="also write torch.profiler's operator table of one tagger scan here")
    return parser


def _settings(args) -> dict:
    settings = load_secrets(args.params)
    throughput = settings.throughput
    return {
        "sizes_mb": list(throughput.sizes_mb),
        "kinds": list(throughput.kinds),
        "repeats": throughput.repeats,
        "tools": list(throughput.tools),
        "weights": throughput.weights,
        "device": settings.run.device,
        "backend": settings.run.backend,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_with_params(build_parser(), argv, _settings)
    setup_logging(args.log)
    for name in ("repeats", "baseline_repeats", "batch_chunks", "ssd_chunk_size", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    if args.gate_margin < 0:
        raise ConfigError(f"--gate-margin must be >= 0, got {args.gate_margin}")
    for size in args.sizes_mb:
        size_bytes(size)
    if args.no_tagger:
        args.checkpoint = None
        if not args.tools:
            raise ConfigError("--no-tagger with no --tools leaves nothing to time")
        if args.profile is not None:
            raise ConfigError("--profile profiles a tagger scan: it cannot go with --no-tagger")
    elif args.checkpoint is None:
        args.checkpoint, why = default_checkpoint(Path.cwd())
        log.info("tagger checkpoint %s (%s)", args.checkpoint, why)
    elif not args.checkpoint.is_file():
        raise ConfigError(f"checkpoint not found: {args.checkpoint} (give --checkpoint, or --no-tagger)")
    for tool in args.tools:  # before the tagger's minutes of timing, not after
        tool_version(TOOLS[tool].dist)
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        work_dir = args.work_dir or Path(tmp)
        files = build_files(work_dir, args.sizes_mb, list(dict.fromkeys(args.kinds)), args.seed)
        rows = measure(
            files,
            args.checkpoint,
            args.device,
            args.backend,
            list(dict.fromkeys(args.tools)),
            args.repeats,
            args.warmup,
            args.baseline_repeats,
            {"chunk_len": args.chunk_len, "overlap": args.overlap},
            args.batch_chunks,
            args.profile,
            args.weights,
            args.ssd_chunk_size,
            args.gate,
            args.gate_margin,
            args.threads,
        )
    table = pd.DataFrame([asdict(row) for row in rows], columns=COLUMNS)
    atomic_write_text(args.out, table.to_csv(index=False))
    print(table.to_string(index=False))
    log.info("wrote %s (%d rows)", args.out, len(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
