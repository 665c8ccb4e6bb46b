"""A compile and autotune cache the user can carry: ALIGN_MAMBA_CACHE_DIR=.cache/kernels.

Triton (mamba-ssm's kernels and their autotune winners, TRITON_CACHE_AUTOTUNING) and torch.compile
(inductor's generated kernels, FX graphs and autotune results) each keep an on-disk cache, by
default under ~/.triton and /tmp, which a fresh machine does not have. With ALIGN_MAMBA_CACHE_DIR
set, both go under that folder (DIR/triton, DIR/inductor), so copying it to another machine with the
same GPU, torch and Triton makes the first step there start warm. Both libraries read these
variables when they first compile, and this module runs when `align_mamba` is imported, before any
stage imports torch. An explicit TRITON_CACHE_DIR or TORCHINDUCTOR_CACHE_DIR still wins.
Imports nothing heavy (it runs on every `python -m align_mamba...`).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ALIGN_MAMBA_CACHE_DIR"
TOOL_DIRS = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor"}


def configure(environ: dict | None = None) -> Path | None:
    """Point the tools' cache variables under $ALIGN_MAMBA_CACHE_DIR (made absolute: jobs may change
    directory); returns that folder, or None when the variable is unset or empty (today's defaults)."""
    env = os.environ if environ is None else environ
    value = env.get(CACHE_ENV, "")
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    env[CACHE_ENV] = str(root)  # children (snakemake jobs, packed workers) inherit the absolute path
    for variable, sub in TOOL_DIRS.items():
        env.setdefault(variable, str(root / sub))
    return root
