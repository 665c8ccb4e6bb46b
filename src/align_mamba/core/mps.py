"""CUDA MPS around a run that packs cells on one GPU, as the gpu-node profile does.

Several cell processes on one GPU time-slice it unless a CUDA MPS daemon lets their kernels run
side by side (tools/mps.sh: start, stop). A Snakemake run starts one when its jobs run on this
machine, on a GPU, several at a time (`gpu_slots` > 1), and stops it at the end if it started it:
    wanted(...)  whether this run should start a daemon
    start(script, env)  the daemon's client variables put into `env` (True), or one line why not
    stop(script)  stop it
ALIGN_MAMBA_MPS=off leaves MPS alone (a caller that manages it itself, e.g. several Snakemakes
sharing one GPU); a daemon whose variables are already in the environment is used as it is.
Where the machine does not allow MPS, tools/mps.sh says so in one line and the run goes on without.
Imports nothing heavy: the Snakefile imports it while parsing.
"""

from __future__ import annotations

import subprocess
from collections.abc import MutableMapping
from pathlib import Path

SWITCH = "ALIGN_MAMBA_MPS"
PIPE = "CUDA_MPS_PIPE_DIRECTORY"


def wanted(uses_gpu: bool, slots: object, local: bool, env: MutableMapping[str, str]) -> bool:
    """True when jobs run here (`local`), on a GPU, more than one at a time, and no one else manages MPS."""
    if env.get(SWITCH, "auto") == "off" or env.get(PIPE):
        return False
    return bool(uses_gpu) and local and isinstance(slots, int) and slots > 1


def start(script: Path, env: MutableMapping[str, str]) -> tuple[bool, str]:
    """Run `script start`; its `export A=... B=...` line goes into `env` (the jobs inherit it).
    Returns (started, what happened in one line)."""
    done = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
    exports = dict(
        item.split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith("export ")
        for item in line.split()[1:]
    )
    message = (done.stderr.strip().splitlines() or ["mps: no output"])[-1]
    if not exports:
        return False, message
    env.update(exports)
    return True, message


def stop(script: Path) -> None:
    subprocess.run(["bash", str(script), "stop"], capture_output=True, text=True)
