"""Serial against packed: one MQAR grid's wall clock, one cell at a time and several cells per GPU.

    python -m align_mamba.bench.packing --params workflow/presets/gpu_packing.yaml --slots 8 \
        --out results/gpu/packing

Both runs go through the pipeline itself, `snakemake --profile workflow/profiles/gpu-node --until
evaluate --resources gpu_slots=N`, N = 1 (serial) and then --slots (packed), each in a fresh scratch
copy of the workflow (Snakefile, workflow/, a link to src/, the params file as params.yaml), so
the project's own runs/ and results/ are never touched. Untimed before either: the MQAR data of
both copies, and one 2-step training per (architecture, d_state) so Triton's on-disk caches hold
every kernel compiled and autotuned (TRITON_CACHE_AUTOTUNING, set by align_mamba.backends):
neither run pays for compilation the other skips. Writes OUT/packing.json (seconds, speedup,
cells, slots, device) and the two runs' Snakemake output as OUT/serial.log and OUT/packed.log.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from align_mamba.atomic import atomic_write_json
from align_mamba.cli_args import OneLineParser, flag_names, read_yaml, setup_logging
from align_mamba.errors import ConfigError, run_cli
from align_mamba.pipeline import Cell, cells, check_params, train_command

log = logging.getLogger("align_mamba.bench.packing")

PROJECT_FILES = ("Snakefile", "workflow")
WARMUP_STEPS = 2
Runner = Callable[[str, Path, Path], None]


def run_shell(command: str, cwd: Path, log_path: Path) -> None:
    """Run `command` in `cwd`, its output appended to `log_path`; a failure is one ConfigError line."""
    with log_path.open("a") as out:
        out.write(f"$ {command}\n")
        out.flush()
        done = subprocess.run(command, shell=True, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise ConfigError(f"`{command}` failed with exit status {done.returncode} in {cwd}; see {log_path}")


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


def warmup_cells(params: dict) -> list[Cell]:
    """One cell per (architecture, d_state): the kernels' compile and autotune keys do not involve
    the sequence length or the seed, so these cover every kernel the grid launches."""
    first: dict[tuple[str, int], Cell] = {}
    for cell in cells(params):
        first.setdefault((cell.name, cell.d_state), cell)
    return list(first.values())


def snakemake_command(profile: str, target: str, slots: int, cores: int) -> str:
    return (f"snakemake --profile {profile} --scheduler greedy --cores {cores} --until {target} "
            f"--resources gpu_slots={slots}")


def count_cells(project: Path) -> int:
    return len(list((project / "results" / "cells").rglob("*.json")))


def measure_packing(root: Path, params_file: Path, work: Path, out: Path, slots: int, cores: int,
                    profile: str = "workflow/profiles/gpu-node", run: Runner = run_shell) -> dict:
    """Time the grid of `params_file` serial (gpu_slots=1) and packed (gpu_slots=slots); see the module doc."""
    params = read_yaml(params_file, "params file")
    check_params(params, str(params_file))
    if params["run"]["device"] != "cuda":
        raise ConfigError(f"{params_file}: run.device must be cuda (packing shares a GPU), got {params['run']['device']}")
    out.mkdir(parents=True, exist_ok=True)
    projects = {mode: make_project(root, params_file, work / mode) for mode in ("serial", "packed")}
    for mode, project in projects.items():
        run(snakemake_command(profile, "mqar_data", 1, cores), project, out / f"{mode}.log")
    started = time.perf_counter()
    for cell in warmup_cells(params):
        command = (f"{train_command(params, cell)} --steps {WARMUP_STEPS} --out {work}/warmup/{cell.name}-{cell.stem} "
                   f"--log {work}/warmup/{cell.name}-{cell.stem}.log")
        run(command, projects["serial"], out / "warmup.log")
    warmup_seconds = time.perf_counter() - started
    seconds = {}
    for mode, mode_slots in (("serial", 1), ("packed", slots)):
        started = time.perf_counter()
        run(snakemake_command(profile, "evaluate", mode_slots, cores), projects[mode], out / f"{mode}.log")
        seconds[mode] = time.perf_counter() - started
        log.info("%s (gpu_slots=%d): %.1f s", mode, mode_slots, seconds[mode])
    grid = sum(1 for _ in cells(params))
    finished = {mode: count_cells(project) for mode, project in projects.items()}
    if any(n != grid for n in finished.values()):
        raise ConfigError(f"expected {grid} evaluated cells in each run, found {finished}")
    return {"cells": grid, "slots": slots, "cores": cores, "serial_seconds": round(seconds["serial"], 2),
            "packed_seconds": round(seconds["packed"], 2), "speedup": round(seconds["serial"] / seconds["packed"], 3),
            "warmup_seconds": round(warmup_seconds, 2), "params_file": str(params_file), "profile": profile,
            "device": _device_name()}


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.bench.packing", description=__doc__.split("\n")[0])

    def option(name: str, **kwargs) -> None:
        parser.add_argument(*flag_names(name), dest=name, **kwargs)

    option("params", type=Path, required=True, help="the grid to time (a params.yaml, e.g. a preset)")
    option("out", type=Path, required=True, help="folder for packing.json and the runs' logs")
    option("slots", type=int, default=8, help="cells sharing the GPU in the packed run")
    option("cores", type=int, default=os.cpu_count() or 1, help="Snakemake --cores for both runs")
    option("work_dir", type=Path, help="where the scratch projects go (default: a temporary directory)")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    if args.slots < 2 or args.cores < 1:
        raise ConfigError(f"--slots must be >= 2 and --cores >= 1, got {args.slots} and {args.cores}")
    if not (Path.cwd() / "Snakefile").is_file():
        raise ConfigError("run from the project root (no Snakefile here)")
    with tempfile.TemporaryDirectory(prefix="packing-") as tmp:
        work = args.work_dir or Path(tmp)
        result = measure_packing(Path.cwd(), args.params, work, args.out, args.slots, args.cores)
    atomic_write_json(args.out / "packing.json", result)
    print(f"serial {result['serial_seconds']} s, packed ({args.slots} slots) {result['packed_seconds']} s: "
          f"{result['speedup']}x over {result['cells']} cells")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
