"""Spread one machine's jobs over its GPUs: each job claims the least-used GPU for its lifetime.

Snakemake on one machine (the gpu-node profile) caps how many cells run at once (`gpu_slots`) but
does not say which GPU each one gets, so without a claim every process lands on GPU 0. A claim is
an exclusive, non-blocking flock on a slot file `gpu{i}-slot{k}`, tried slot by slot across the
GPUs: claims fill every GPU's slot 0, then every slot 1, and so on (round robin). The kernel drops
a lock when its process exits, however it exits, so a killed job frees its slot. Under SLURM each
job sees only its own GPU (CUDA_VISIBLE_DEVICES) and nothing is claimed.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import tempfile
from pathlib import Path
from typing import IO

import torch

from align_mamba.core.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "ALIGN_MAMBA_GPU_LOCKS"
# The claim of this process: its open slot file holds the lock until the process ends.
_HELD: list[IO] = []


def lock_dir() -> Path:
    """Where the slot files live: $ALIGN_MAMBA_GPU_LOCKS, else one folder per user in the temp dir."""
    default = Path(tempfile.gettempdir()) / f"align-mamba-gpu-slots-{os.getuid()}"
    return Path(os.environ.get(LOCK_DIR_ENV, default))


def claim(n_gpus: int, directory: Path) -> tuple[int, IO]:
    """Lock the first free slot file in round-robin order; returns (GPU index, the open locked file).

    Slot numbers are unbounded, so a free one is always found."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create the GPU slot folder {directory} ({err.strerror}); set {LOCK_DIR_ENV} to a writable folder"
        ) from None
    for slot in itertools.count():
        for gpu in range(n_gpus):
            handle = open(directory / f"gpu{gpu}-slot{slot}", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return gpu, handle


def select_gpu(device: torch.device) -> torch.device:
    """`cuda` on a machine with several visible GPUs → the GPU this process claims, made current.

    Any other device (the CPU, an explicit `cuda:N`, a single visible GPU) is returned unchanged.
    """
    if device.type != "cuda" or device.index is not None or torch.cuda.device_count() < 2:
        return device
    gpu, handle = claim(torch.cuda.device_count(), lock_dir())
    _HELD.append(handle)
    torch.cuda.set_device(gpu)
    log.info("using GPU %d of %d (slot file %s)", gpu, torch.cuda.device_count(), handle.name)
    return torch.device("cuda", gpu)
