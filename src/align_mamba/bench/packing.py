"""Serial against packed: one MQAR grid's wall clock, one cell at a time and several cells per GPU.

    python -m align_mamba.bench.packing --params workflow/presets/gpu_packing.yaml --slots 8 \
        --out results/gpu/packing

Both runs go through the pipeline itself, `snakemake --profile workflow/profiles/gpu-node --until
evaluate --resources gpu_slots=N`, N = 1 (serial) and then --slots (packed), each in a fresh scratch
copy of the workflow (Snakefile, workflow/, a link to src/, the params file as params.yaml), so
the project's own runs/ and results/ are never touched. Untimed before either: the MQAR data of
both copies, and one 2-step training per (architecture, d_state) so Triton's on-disk caches hold
every kernel compiled and autotuned (TRITON_CACHE_AUTOTUNING, set by align_mamba.core.backends):
neither run pays for compilation the other skips (the warm-ups run side by side, and again in every
invocation, so a fresh machine starts as warm as the last one). `--modes serial` and `--modes packed`
time one run each, e.g. in two calls on a machine with a per-command time limit: each run's seconds
go into OUT/packing.json as soon as it ends, merged with what an earlier invocation for the same
grid, slots and cores wrote there; the speedup appears once both are in. The runs' Snakemake output
is in OUT/serial.log and OUT/packed.log, the warm-ups' in OUT/warmup.log. The packed run shares the
GPU through CUDA MPS as the profile's runs do where the machine allows it (ALIGN_MAMBA_MPS=off in
the environment times it without).

With `--levers`, it measures instead the packed throughput of each training speed lever (eager,
cuda_graph, compile, mps, combined) at the study's 18-layer and 2-layer shapes, SLOTS processes
side by side, into OUT/levers.json (align_mamba.bench.levers; no params file needed):
    python -m align_mamba.bench.packing --levers eager cuda_graph compile mps combined --shapes 18 2 \
        --slots 8 --out results/gpu/packing
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from align_mamba.bench.levers import LEVERS, SHAPES, measure_levers
from align_mamba.core.atomic import atomic_write_json
from align_mamba.core.cli import OneLineParser, flag_names, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.core.params import to_dict
from align_mamba.core.train_config import COMPILE_MODES
from align_mamba.recall.params import Cell, RecallParams, load_recall_params

log = logging.getLogger("align_mamba.bench.packing")

PROJECT_FILES = ("Snakefile", "workflow")
WARMUP_STEPS = 2
MODES = ("serial", "packed")
Runner = Callable[[list[str], Path, Path], None]


def run_shell(commands: list[str], cwd: Path, log_path: Path) -> None:
    """Run `commands` side by side in `cwd`, output appended to `log_path`; a failure is one ConfigError line."""
    with log_path.open("a") as out:
        out.write("".join(f"$ {command}\n" for command in commands))
        out.flush()
        running = [
            (command, subprocess.Popen(command, shell=True, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))
            for command in commands
        ]
        statuses = [(command, process.wait()) for command, process in running]
    failed = [(command, status) for command, status in statuses if status != 0]
    if failed:
        command, status = failed[0]
        raise ConfigError(f"`{command}` failed with exit status {status} in {cwd}; see {log_path}")


def make_project(root: Path, params_file: Path, dest: Path) -> Path:
    """A scratch copy of the workflow at `dest`, running `params_file`, with src/ linked from `root`."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, dest / name)
        else:
            shutil.copy2(source, dest / name)
    (dest / "src").symlink_to((root / "src").resolve(), target_is_directory=True)
    shutil.copy2(params_file, dest / "params.yaml")
    return dest


def warmup_cells(params: RecallParams) -> list[Cell]:
    """One cell per (architecture, d_state): the kernels' compile and autotune keys do not involve
    the sequence length or the seed, so these cover every kernel the grid launches."""
    first: dict[tuple[str, int], Cell] = {}
    for cell in params.cells:
        first.setdefault((cell.architecture, cell.model.d_state, cell.suffix), cell)
    return list(first.values())


def warmup_command(cell: Cell, folder: Path) -> str:
    """A WARMUP_STEPS training of `cell`'s shapes, from a config file holding its resolved settings."""
    name = cell.id.replace("/", "-")
    config = folder / f"{name}.json"  # JSON is YAML: train --config reads it
    atomic_write_json(config, {"model": to_dict(cell.model), "train": {**to_dict(cell.train), "steps": WARMUP_STEPS}})
    return (
        f"python -m align_mamba.recall.train --data {cell.data_dir} --out {folder}/{name} --config {config} "
        f"--log {folder}/{name}.log"
    )


def snakemake_command(profile: str, target: str, slots: int, cores: int) -> str:
    return (
        f"snakemake --profile {profile} --scheduler greedy --cores {cores} --until {target} "
        f"--resources gpu_slots={slots}"
    )


def count_cells(project: Path) -> int:
    return len(list((project / "results" / "cells").rglob("*.json")))


def _earlier_result(path: Path, key: dict) -> dict:
    """What an earlier invocation wrote to `path` for the same grid, slots and cores (else nothing)."""
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); remove it to start afresh") from None
    if not isinstance(earlier, dict):
        raise ConfigError(f"{path} must hold a JSON object; remove it to start afresh")
    return earlier if all(earlier.get(name) == value for name, value in key.items()) else {}


def measure_packing(
    root: Path,
    params_file: Path,
    work: Path,
    out: Path,
    slots: int,
    cores: int,
    modes: tuple[str, ...] = MODES,
    profile: str = "workflow/profiles/gpu-node",
    run: Runner = run_shell,
) -> dict:
    """Time the grid of `params_file` serial (gpu_slots=1) and/or packed (gpu_slots=slots); see the module doc."""
    params = load_recall_params(params_file)
    if params.run.device != "cuda":
        raise ConfigError(f"{params_file}: run.device must be cuda (packing shares a GPU), got {params.run.device}")
    grid = len(params.cells)
    key = {"params_file": str(params_file), "cells": grid, "slots": slots, "cores": cores, "profile": profile}
    result = {**_earlier_result(out / "packing.json", key), **key}
    out.mkdir(parents=True, exist_ok=True)
    projects = {}
    for mode in modes:
        shutil.rmtree(work / mode, ignore_errors=True)
        projects[mode] = make_project(root, params_file, work / mode)
        run([snakemake_command(profile, "mqar_data", 1, cores)], projects[mode], out / f"{mode}.log")
    started = time.perf_counter()
    warmups = [warmup_command(cell, work / "warmup") for cell in warmup_cells(params)]
    run(warmups, projects[modes[0]], out / "warmup.log")
    result["warmup_seconds"] = round(time.perf_counter() - started, 2)
    for mode in modes:
        mode_slots = 1 if mode == "serial" else slots
        started = time.perf_counter()
        run([snakemake_command(profile, "evaluate", mode_slots, cores)], projects[mode], out / f"{mode}.log")
        seconds = time.perf_counter() - started
        evaluated = count_cells(projects[mode])
        if evaluated != grid:
            raise ConfigError(f"the {mode} run evaluated {evaluated} of {grid} cells")
        result.update({f"{mode}_seconds": round(seconds, 2), f"{mode}_device": _device_name()})
        if "serial_seconds" in result and "packed_seconds" in result:
            result["speedup"] = round(result["serial_seconds"] / result["packed_seconds"], 3)
        atomic_write_json(out / "packing.json", result)
        log.info("%s (gpu_slots=%d): %.1f s", mode, mode_slots, seconds)
    return result


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.bench.packing", description=__doc__.split("\n")[0])

    def option(name: str, **kwargs) -> None:
        parser.add_argument(*flag_names(name), dest=name, **kwargs)

    option("params", type=Path, help="the grid to time (a params.yaml, e.g. a preset); not with --levers")
    option("out", type=Path, required=True, help="folder for packing.json and the runs' logs")
    option("slots", type=int, default=8, help="cells sharing the GPU in the packed run")
    option("cores", type=int, default=os.cpu_count() or 1, help="Snakemake --cores for both runs")
    option("work_dir", type=Path, help="where the scratch projects go (default: a temporary directory)")
    option("modes", nargs="+", choices=MODES, default=list(MODES), help="which runs to time (default both)")
    option("levers", nargs="+", choices=LEVERS, help="time these speed levers packed instead of the grid")
    option("shapes", nargs="+", type=int, choices=sorted(SHAPES), default=sorted(SHAPES, reverse=True))
    option("steps", type=int, default=100, help="--levers: timed steps per worker")
    option("warmup_steps", type=int, default=6, help="--levers: untimed steps per worker (compile, capture)")
    option("compile_mode", choices=COMPILE_MODES[1:], default="default", help="--levers: the compile lever's mode")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    if args.slots < 2 or args.cores < 1:
        raise ConfigError(f"--slots must be >= 2 and --cores >= 1, got {args.slots} and {args.cores}")
    if not (Path.cwd() / "Snakefile").is_file():
        raise ConfigError("run from the project root (no Snakefile here)")
    if args.levers:
        return _main_levers(args)
    if args.params is None:
        raise ConfigError("--params is required (the grid to time), unless --levers is given")
    with tempfile.TemporaryDirectory(prefix="packing-") as tmp:
        work = args.work_dir or Path(tmp)
        result = measure_packing(
            Path.cwd(), args.params, work, args.out, args.slots, args.cores, tuple(dict.fromkeys(args.modes))
        )
    print(
        ", ".join(f"{mode} {result[f'{mode}_seconds']} s" for mode in MODES if f"{mode}_seconds" in result)
        + (f": {result['speedup']}x over {result['cells']} cells" if "speedup" in result else "")
    )
    return 0


def _main_levers(args) -> int:
    if args.steps < 1 or args.warmup_steps < 1:
        raise ConfigError(f"--steps and --warmup-steps must be >= 1, got {args.steps} and {args.warmup_steps}")
    with tempfile.TemporaryDirectory(prefix="levers-") as tmp:
        result = measure_levers(
            Path.cwd(),
            args.out,
            args.work_dir or Path(tmp),
            args.slots,
            tuple(dict.fromkeys(args.shapes)),
            tuple(dict.fromkeys(args.levers)),
            args.steps,
            args.warmup_steps,
            args.compile_mode,
        )
    for row in result["rows"]:
        print(
            f"{row['n_layers']:>2} layers {row['lever']:<10} {row['status']:<7} "
            f"{row.get('cell_steps_per_s')} cell-steps/s, x{row['speedup_vs_eager']} vs eager {row['reason']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
