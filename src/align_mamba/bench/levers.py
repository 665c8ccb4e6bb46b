"""Packed training throughput per speed lever at the study's two shapes, on one GPU.

    python -m align_mamba.bench.packing --levers eager cuda_graph compile mps combined \
        --shapes 18 2 --slots 8 --out results/gpu/packing

For each (shape, lever) SLOTS worker processes train the same cell side by side on the GPU, as the
gpu-node profile packs a grid, with the thread environment Snakemake gives each of its jobs
(JOB_THREADS): each builds the cell through align_mamba.recall.train (RecallTask
and core.loop's step, so a lever runs exactly the code a grid cell runs), takes `warmup` untimed
steps (Triton autotunes, inductor compiles, the CUDA graph is captured), waits at a file barrier
until every worker is warm, then times `steps` steps. cell_steps_per_s is SLOTS·steps over the
span from the first timed start to the last timed end. Levers:
  eager       today's step (the baseline of speedup_vs_eager)
  cuda_graph  train.cuda_graph: the whole step replayed from one CUDA graph
  compile     train.compile (--compile-mode, default "default")
  mps         today's step with the workers sharing the GPU through a CUDA MPS daemon (tools/mps.sh)
  fused       mamba-ssm's fused Mamba-2 path: causal-conv1d's conv, the SSD scan and the gate in one
              op (use_mem_eff_path); skipped where causal-conv1d is not installed
  chunk_64    today's step with the SSD scan blocked in chunks of 64 instead of the study's 256: the
              same function up to rounding, less of the scan's quadratic intra-chunk work
  combined    cuda_graph + compile + mps, + fused where causal-conv1d is installed
Every lever but fused and combined runs as on a machine without causal-conv1d (the worker hides the
package), so eager is today's path wherever the benchmark runs; each row records `fused`.
Shapes (model settings of workflow/presets/study.yaml): 18 = hybrid [0, 2], 18 decoder and 2
encoder layers, d_model 128, d_state 64, batch 128, 128 pairs (seq2seq layout); 2 = pure Mamba-2,
2 layers, d_model 128, d_state 64, batch 256, 256 tokens (64 pairs, decoder layout); 4 = pure
Mamba-2 as experiments 01 and 04 train it, 4 layers, batch 256, 512 tokens (128 pairs).

Rows go into OUT/levers.json as each finishes, merged with the rows an earlier invocation wrote on
the same machine, GPU and slots, so a machine whose commands are time-limited can run one shape or
lever per call; speedup_vs_eager compares with the eager row of that same file. A lever whose
workers fail (or MPS that will not start) is a row with status failed/skipped and its reason;
the workers' output is in OUT/levers-<shape>-<lever>.log. Every worker also reports its
time-to-first-step (process start to the end of the first step): on a warm kernel cache
(ALIGN_MAMBA_CACHE_DIR, default .cache/kernels here) it should be at most 30 s. The first worker
then profiles PROFILE_STEPS more steps (torch.profiler): the row's kernel_time says where a step's
kernel time goes (SSD scan, causal conv, matmul, norm, cat / copy, elementwise, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from align_mamba.core import mps
from align_mamba.core.atomic import atomic_write_json
from align_mamba.core.errors import ConfigError
from align_mamba.kernel_cache import CACHE_ENV

STARTED = time.time()  # this process's start, near enough: time-to-first-step counts from here
log = logging.getLogger("align_mamba.bench.levers")

LEVERS = ("eager", "cuda_graph", "compile", "mps", "fused", "chunk_64", "combined")
CONV_INSTALL = "source .gpu/setup_device.sh --conv, or pip install causal-conv1d (the [cuda] extra)"
BARRIER_TIMEOUT_S = 900.0
PROFILE_STEPS = 5
TOP_KERNELS = 3  # per category, the heaviest kernels named in a row's kernel_time
KERNEL_NAME_CHARS = 120  # templated CUDA kernel names run to thousands of characters
# Each worker gets the thread environment Snakemake gives a job of the train rule (`threads: 1`):
# it exports these variables = the rule's threads, so the workers' CPU libraries (torch, BLAS,
# numpy) run as a grid cell's do. Why one thread matters: core.loop.limit_host_threads.
JOB_THREADS = 1
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
# Where a step's kernel time goes, by kernel (GPU) or operator (CPU) name: the first pattern that
# matches names the category. Inductor's kernels first: their names also hold the ops they fuse.
KERNEL_CATEGORIES = (
    ("compiled (Inductor)", r"^triton_(poi|red|per|tem)_"),
    ("SSD scan", r"chunk_scan|chunk_state|state_passing|bmm_chunk|chunk_cumsum|ssd|selective_scan"),
    ("causal conv", r"conv1d|causal_conv|conv_depthwise|depthwise|convolution"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("matmul", r"gemm|xmma|cutlass|cublas|nvjet|aten::(mm|bmm|addmm|linear|matmul)$"),
    ("softmax / loss", r"softmax|nll|cross_entropy"),
    ("norm", r"norm|rms"),
    ("optimizer", r"multi_tensor|adam|foreach"),
    ("cat / copy", r"cat|copy|memcpy|memset|aten::(to|contiguous|index\w*|clone)$"),
    ("reductions", r"reduce|aten::(sum|mean|max|amax)$"),
    ("elementwise", r"elementwise|vectorized|unrolled|aten::"),
)


@dataclass(frozen=True)
class Shape:
    """One of the study's cell shapes: a model (study.yaml's widths), its batch and its data."""

    n_layers: int
    variant: str
    batch: int
    num_pairs: int
    seq_len: int  # decoder-layout length; the seq2seq layout is derived from it

    def model(self) -> dict:
        hybrid = self.variant == "hybrid"
        return {
            "variant": self.variant,
            "d_model": 128,
            "n_layers": self.n_layers,
            "d_state": 64,
            "hybrid_positions": [0, 2] if hybrid else [],
            "encoder_layers": 2,
            "n_heads": 4,
            "headdim": 64,
            "expand": 2,
            "d_conv": 4,
            "chunk_size": 256,
        }


SHAPES = {
    18: Shape(n_layers=18, variant="hybrid", batch=128, num_pairs=128, seq_len=512),
    # the cliff's and d_state scaling's cells (most of the study): pure Mamba-2 at its hypothesis point
    4: Shape(n_layers=4, variant="mamba2", batch=256, num_pairs=128, seq_len=512),
    2: Shape(n_layers=2, variant="mamba2", batch=256, num_pairs=64, seq_len=256),
}


def lever_train(lever: str, compile_mode: str) -> dict:
    """The train settings of `lever` (mps changes the processes' environment, not the settings)."""
    graph = lever in ("cuda_graph", "combined")
    compiled = lever in ("compile", "combined")
    return {"cuda_graph": graph, "compile": compile_mode if compiled else "none"}


def lever_model(n_layers: int, lever: str) -> dict:
    """The model settings of shape `n_layers` under `lever` (chunk_size only changes how the scan is blocked)."""
    return {**SHAPES[n_layers].model(), **({"chunk_size": 64} if lever == "chunk_64" else {})}


def uses_mps(lever: str) -> bool:
    return lever in ("mps", "combined")


def uses_fused(lever: str) -> bool:
    return lever in ("fused", "combined")


def hide_causal_conv1d() -> None:
    """Make this process see no causal-conv1d, as a machine without it: mamba-ssm's Mamba-2 then takes
    its unfused path with PyTorch's conv. A None entry in sys.modules fails every import of the package
    and its submodules with ImportError, which mamba-ssm's optional imports expect."""
    if "mamba_ssm" in sys.modules:
        raise RuntimeError("hide_causal_conv1d must run before mamba_ssm is imported")
    sys.modules["causal_conv1d"] = None


# ---- one worker ----------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> dict:
    """Train the cell of `args.shape` with `args.lever`'s settings; time args.steps steps after the
    barrier. Returns (and writes to args.result) {start, end, steps, first_step_seconds, ...}."""
    if not uses_fused(args.lever):
        hide_causal_conv1d()
    import torch

    from align_mamba.core.backends import runs_fused
    from align_mamba.core.fast_step import train_path
    from align_mamba.core.loop import Loop
    from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
    from align_mamba.recall.train import RecallTask

    shape = SHAPES[args.shape]
    settings = lever_train(args.lever, args.compile_mode)
    model_settings = lever_model(args.shape, args.lever)
    model = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in model_settings.items()})
    train = TrainConfig(
        steps=10**6,
        batch_size=args.batch or shape.batch,
        lr=1.0e-3,
        device=args.device,
        backend="kernels" if args.device == "cuda" else "reference",
        seed=args.index,
        **settings,
    )
    task = RecallTask(CellConfig(model, train), args.data)
    loop = Loop(task, train, args.result.parent / "unused", args.result.parent / "unused")
    loop.train_step(0)
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    synchronize()
    first_step = time.time() - STARTED
    for step in range(1, args.warmup):
        loop.train_step(step)
    synchronize()
    wait_at_barrier(args.barrier, args.index, args.slots)
    start = time.time()
    for step in range(args.warmup, args.warmup + args.steps):
        loop.train_step(step)
    synchronize()
    end = time.time()
    fused = runs_fused(task.model)
    result = {
        "start": start,
        "end": end,
        "steps": args.steps,
        "ms_per_step": 1e3 * (end - start) / args.steps,
        "first_step_seconds": round(first_step, 2),
        "train_path": train_path(train.cuda_graph, train.compile, fused),
        "captured": loop.graph is not None and loop.graph.replay is not None,
        "fused": fused,
    }
    if args.index == 0 and args.profile_steps:  # after the timed span: the profiler's cost is not timed
        first = args.warmup + args.steps
        steps = range(first, first + args.profile_steps)
        result["kernel_time"] = kernel_time(lambda: [loop.train_step(s) for s in steps], args.device, len(steps))
    atomic_write_json(args.result, result)
    return result


def category(name: str) -> str:
    """The KERNEL_CATEGORIES entry of a kernel or operator name ("other" when none matches)."""
    return next((label for label, pattern in KERNEL_CATEGORIES if re.search(pattern, name, re.I)), "other")


def kernel_time(run_steps, device: str, steps: int) -> list[dict]:
    """Profile run_steps() (`steps` training steps): time per step by category, largest first, as
    [{category, ms_per_step, share, largest}], `largest` the category's TOP_KERNELS heaviest kernels
    ({name, ms_per_step}: which copies or elementwise ops to go after). On a GPU the kernels' own
    device time; on the CPU the operators' self time (a smoke test of the same bookkeeping)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        run_steps()
        if cuda:
            torch.cuda.synchronize()
    by_kernel: Counter[str] = Counter()
    for event in prof.key_averages():
        if cuda and event.device_type == DeviceType.CUDA:
            by_kernel[event.key] += event.self_device_time_total
        elif not cuda and event.key.startswith("aten::"):
            by_kernel[event.key] += event.self_cpu_time_total
    totals: Counter[str] = Counter()
    members: dict[str, list[tuple[str, float]]] = {}
    for name, us in by_kernel.most_common():
        group = category(name)
        totals[group] += us
        members.setdefault(group, []).append((name, us))
    whole = sum(totals.values()) or 1.0

    def ms(us: float) -> float:
        return round(us / 1e3 / steps, 3)

    return [
        {
            "category": name,
            "ms_per_step": ms(us),
            "share": round(us / whole, 4),
            "largest": [{"name": k[:KERNEL_NAME_CHARS], "ms_per_step": ms(t)} for k, t in members[name][:TOP_KERNELS]],
        }
        for name, us in totals.most_common()
    ]


def wait_at_barrier(folder: Path, index: int, slots: int) -> None:
    """Mark this worker warm, then wait until all `slots` are (a file per worker in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ready-{index}").touch()
    deadline = time.time() + BARRIER_TIMEOUT_S
    while len(list(folder.glob("ready-*"))) < slots:
        if time.time() > deadline:
            raise ConfigError(f"barrier {folder}: not every worker became warm in {BARRIER_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


# ---- the driver ----------------------------------------------------------------------------------


def write_data(shape: Shape, folder: Path) -> Path:
    """The shape's MQAR data (full vocabulary, every pair queried), written once per folder."""
    from align_mamba.recall.mqar import MQARConfig
    from align_mamba.recall.storage import write_mqar

    if (folder / "manifest.json").is_file():
        return folder
    config = MQARConfig(
        num_pairs=shape.num_pairs,
        seq_len=shape.seq_len,
        num_queries=None,
        train_size=4 * shape.batch,
        val_size=16,
        test_size=16,
        seed=1234,
    )
    return write_mqar(config, folder)


def worker_command(shape: int, lever: str, index: int, slots: int, data: Path, folder: Path, cfg: dict) -> str:
    parts = [
        sys.executable,
        "-m",
        "align_mamba.bench.levers",
        "--shape",
        str(shape),
        "--lever",
        lever,
        "--index",
        str(index),
        "--slots",
        str(slots),
        "--data",
        str(data),
        "--barrier",
        str(folder / "barrier"),
        "--result",
        str(folder / f"worker-{index}.json"),
        "--steps",
        str(cfg["steps"]),
        "--warmup",
        str(cfg["warmup"]),
        "--compile-mode",
        cfg["compile_mode"],
        "--profile-steps",
        str(cfg["profile_steps"]),
    ]
    return shlex.join(parts)


def conv_installed() -> bool:
    from align_mamba.core.backends import has_causal_conv1d

    return has_causal_conv1d()


def start_mps(root: Path) -> tuple[dict[str, str], str]:
    """({variable: value} the workers need, "") with MPS running; ({}, why not) otherwise."""
    exports: dict[str, str] = {}
    started, message = mps.start(root / "tools" / "mps.sh", exports)
    return (exports, "") if started else ({}, message)


def stop_mps(root: Path) -> None:
    mps.stop(root / "tools" / "mps.sh")


def aggregate(results: list[dict]) -> dict:
    """cell_steps_per_s over the workers' common timed span, and the slowest time-to-first-step."""
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    steps = sum(r["steps"] for r in results)
    return {
        "cell_steps_per_s": round(steps / span, 3),
        "ms_per_cell_step": round(1e3 * span / steps, 3),
        "ms_per_step_per_process": round(sum(r["ms_per_step"] for r in results) / len(results), 3),
        "first_step_seconds": max(r["first_step_seconds"] for r in results),
        "captured": all(r["captured"] for r in results),
        "fused": all(r["fused"] for r in results),
        # one worker's profile (the first): where its step's kernel time went
        "kernel_time": next((r["kernel_time"] for r in results if "kernel_time" in r), []),
    }


def with_speedups(rows: list[dict]) -> list[dict]:
    """speedup_vs_eager of every row against the eager row of its shape (None without one)."""
    eager = {r["n_layers"]: r["cell_steps_per_s"] for r in rows if r["lever"] == "eager" and r["status"] == "ok"}
    for row in rows:
        base = eager.get(row["n_layers"])
        ok = row["status"] == "ok" and base
        row["speedup_vs_eager"] = round(row["cell_steps_per_s"] / base, 3) if ok else None
    return rows


def _earlier_rows(path: Path, key: dict) -> list[dict]:
    if not path.is_file():
        return []
    try:
        earlier = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); remove it to start afresh") from None
    if not isinstance(earlier, dict) or not isinstance(earlier.get("rows"), list):
        raise ConfigError(f"{path} must hold a JSON object with rows; remove it to start afresh")
    return earlier["rows"] if all(earlier.get(k) == v for k, v in key.items()) else []


def measure_levers(
    root: Path,
    out: Path,
    work: Path,
    slots: int,
    shapes: tuple[int, ...],
    levers: tuple[str, ...],
    steps: int = 100,
    warmup: int = 6,
    compile_mode: str = "default",
    profile_steps: int = PROFILE_STEPS,
    run=None,
    device: str | None = None,
) -> dict:
    """Rows of (shape, lever) into OUT/levers.json; see the module doc. `run` is packing.run_shell."""
    from align_mamba.bench.packing import _device_name, run_shell

    run = run or run_shell
    os.environ.setdefault(CACHE_ENV, str(root / ".cache" / "kernels"))  # inherited by every worker
    out.mkdir(parents=True, exist_ok=True)
    # rows of a file written with other worker threads (or before they were set) are not comparable
    key = {"slots": slots, "device": device or _device_name(), "host": platform.node(), "worker_threads": JOB_THREADS}
    cfg = {"steps": steps, "warmup": warmup, "compile_mode": compile_mode, "profile_steps": profile_steps}
    path = out / "levers.json"
    rows = [
        r
        for r in _earlier_rows(path, key)
        if (r["n_layers"], r["lever"]) not in {(s, lv) for s in shapes for lv in levers}
    ]
    for n_layers in shapes:
        data = write_data(SHAPES[n_layers], work / f"data-{n_layers}")
        for lever in sorted(levers, key=LEVERS.index):  # eager first: the others compare with it
            rows.append(measure_one(root, out, work, n_layers, lever, slots, data, cfg, run))
            result = {**key, **cfg, "cache_dir": os.environ[CACHE_ENV], "rows": with_speedups(rows)}
            atomic_write_json(path, result)
            log.info("%d layers, %s: %s", n_layers, lever, rows[-1])
    return {**key, **cfg, "rows": with_speedups(rows)}


def measure_one(root, out, work, n_layers, lever, slots, data, cfg, run) -> dict:
    """One row: SLOTS workers of `lever` at shape `n_layers`, with MPS around them where asked."""
    row = {"n_layers": n_layers, "lever": lever, "slots": slots, **lever_train(lever, cfg["compile_mode"])}
    row.update(mps=uses_mps(lever), chunk_size=lever_model(n_layers, lever)["chunk_size"])
    row.update(steps=cfg["steps"], warmup=cfg["warmup"])  # a merged file mixes calls
    if lever == "fused" and not conv_installed():
        return {
            **row,
            "status": "skipped",
            "reason": f"causal-conv1d is not installed ({CONV_INSTALL})",
            "cell_steps_per_s": None,
        }
    folder = work / f"{n_layers}-{lever}"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    exports = dict.fromkeys(THREAD_VARIABLES, str(JOB_THREADS))
    if row["mps"]:
        mps_exports, why = start_mps(root)
        if not mps_exports:
            return {**row, "status": "skipped", "reason": why, "cell_steps_per_s": None}
        exports.update(mps_exports)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in exports.items()) + " "
    commands = [env + worker_command(n_layers, lever, i, slots, data, folder, cfg) for i in range(slots)]
    try:
        run(commands, root, out / f"levers-{n_layers}-{lever}.log")
        results = [json.loads((folder / f"worker-{i}.json").read_text()) for i in range(slots)]
    except (ConfigError, FileNotFoundError) as err:
        # run_shell names the whole command first; the row keeps what happened and where the log is
        reason = "a worker " + str(err).rsplit("` ", 1)[-1] if "` " in str(err) else str(err)
        return {**row, "status": "failed", "reason": " ".join(reason.split())[:300], "cell_steps_per_s": None}
    finally:
        if row["mps"]:
            stop_mps(root)
    return {**row, "status": "ok", "reason": "", **aggregate(results)}


def main(argv: list[str] | None = None) -> int:
    """The worker's command line (the driver is `python -m align_mamba.bench.packing --levers`)."""
    from align_mamba.core.cli import OneLineParser, setup_logging

    parser = OneLineParser(prog="python -m align_mamba.bench.levers", description="one packed worker")
    parser.add_argument("--shape", type=int, choices=sorted(SHAPES), required=True)
    parser.add_argument("--lever", choices=LEVERS, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--barrier", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--batch", type=int, default=0, help="a smaller batch than the shape's (a CPU smoke test)")
    parser.add_argument(
        "--profile-steps", type=int, default=PROFILE_STEPS, help="worker 0: steps profiled after timing"
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke test of the worker")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    worker(args)
    return 0


if __name__ == "__main__":
    from align_mamba.core.errors import run_cli

    raise SystemExit(run_cli(main))
