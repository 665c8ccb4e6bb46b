"""Which implementation of the recurrent mixers runs: their kernels or the pure-PyTorch reference.

The kernels are mamba-ssm's (Mamba-1, Mamba-2, Mamba-3) and flash-linear-attention's (the delta
rule of DeltaNet and Gated DeltaNet); every mixer has a pure-PyTorch reference with the same
parameters, so a checkpoint runs on either.

`auto` picks the kernels when CUDA and mamba-ssm are usable and the reference otherwise, and logs
which; `kernels` without them fails with the install command. Callers record the resolved name.
"""

from __future__ import annotations

import importlib
import logging
import os
from functools import lru_cache

import torch

from align_mamba.core.errors import BackendUnavailableError, ConfigError
from align_mamba.core.params import BACKENDS

log = logging.getLogger(__name__)

# mamba-ssm's Triton kernels autotune in every new process (seconds per kernel, minutes when a
# packed grid starts many processes at once); Triton keeps the winners in its on-disk cache when
# asked, so a grid's cells reuse them. Read when a kernel first runs, so setting it here suffices.
os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")

KERNELS_INSTALL = (
    "pip install -e '.[cuda]'  (mamba-ssm, causal-conv1d and flash-linear-attention; on a machine without "
    "internet: MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE pip install --no-build-isolation mamba-ssm)"
)
# Mixers whose kernels come from flash-linear-attention (Triton only), not from mamba-ssm.
FLA_MIXERS = ("gated_deltanet", "deltanet")
FLA_INSTALL = "pip install flash-linear-attention==0.6.0"


@lru_cache(maxsize=None)
def optional_module(name: str):
    """The imported module `name`, or None when it is not installed or fails to import."""
    try:
        return importlib.import_module(name)
    except Exception:  # a broken CUDA extension raises OSError/RuntimeError, not only ImportError
        return None


def mamba_ssm_status(mixer: str = "mamba2") -> str | None:
    """None when the kernels of `mixer` can run here, else the reason they cannot.

    mixer: mamba2, mamba1 (also the compiled selective scan), mamba3 (mamba-ssm >= 2.3.2) or one of
    FLA_MIXERS (flash-linear-attention's Triton kernels; mamba-ssm is not needed for those).
    """
    if not torch.cuda.is_available():
        return "CUDA is not available"
    if mixer in FLA_MIXERS:
        if optional_module("fla.ops.gated_delta_rule") is None or optional_module("fla.ops.delta_rule") is None:
            return f"flash-linear-attention is not installed ({FLA_INSTALL})"
        return None
    if optional_module("mamba_ssm") is None:
        return "mamba-ssm is not installed"
    if mixer == "mamba1" and not has_selective_scan_cuda():
        return "mamba-ssm's compiled selective scan (selective_scan_cuda, Mamba-1) is not installed"
    if mixer == "mamba3" and optional_module("mamba_ssm.modules.mamba3") is None:
        return "mamba-ssm's Mamba3 does not import (it needs mamba-ssm >= 2.3.2)"
    return None


def has_causal_conv1d() -> bool:
    """True when causal-conv1d's CUDA kernels import as mamba-ssm's fused Mamba-2 path imports them.

    Checking the compiled module, not the package: a package whose extension is missing (or still
    being installed) makes mamba-ssm set those functions to None and fail only at the first call.
    """
    return optional_module("causal_conv1d.cpp_functions") is not None


def has_selective_scan_cuda() -> bool:
    """True when mamba-ssm's compiled selective scan (Mamba-1) is importable and real."""
    module = optional_module("selective_scan_cuda")
    try:
        return module is not None and callable(module.fwd)
    except Exception:  # a placeholder module may raise anything on attribute access
        return False


def resolve_backend(requested: str, device: torch.device | None = None, mixer: str = "mamba2") -> str:
    """Map `auto` / `kernels` / `reference` to the backend that will actually run `mixer`.

    mixer: mamba2, mamba1 (also needs the compiled selective scan), mamba3, gated_deltanet, deltanet
    (flash-linear-attention) or attention (no recurrent layer: SDPA runs either way, reported as "sdpa"). device: where the model will run; kernels need
    cuda, so on a CPU device `auto` is the reference and `kernels` an error. Returns "kernels",
    "reference" or "sdpa"; raises ConfigError for an unknown name or kernels on CPU, and
    BackendUnavailableError when "kernels" is requested but cannot run.
    """
    if requested not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    if mixer == "attention":
        return "sdpa"
    if requested == "reference":
        return "reference"
    on_cpu = device is not None and device.type != "cuda"
    if requested == "kernels" and on_cpu:
        raise ConfigError(f"backend 'kernels' runs only on device cuda, got device {device.type}")
    reason = "the device is the CPU" if on_cpu else mamba_ssm_status(mixer)
    if requested == "kernels":
        if reason is not None:
            raise BackendUnavailableError(
                f"backend 'kernels' needs CUDA and the {mixer} kernels, but {reason}; install with: {KERNELS_INSTALL}"
            )
        return "kernels"
    if reason is not None:
        log.warning("backend auto: %s, falling back to the pure-PyTorch reference", reason)
        return "reference"
    log.info("backend auto: using the %s kernels", mixer)
    return "kernels"


def resolve_device(requested: str) -> torch.device:
    """`auto` → cuda when available, else cpu; `cuda` without a GPU is a ConfigError."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested not in ("cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but torch sees no CUDA GPU")
    return torch.device(requested)


def describe_device(device: torch.device) -> str:
    """The device as metrics record it: "cpu", or "cuda:0 (NVIDIA H200)" so a result names its card."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def kernel_module(name: str, build, d_conv: int, **kwargs):
    """Build a mamba-ssm mixer with `build(fused=..., **kwargs)` and record what runs.

    Sets `backend = "kernels"` and `fused` (causal-conv1d's fused path) on the module; rejects a
    conv width causal-conv1d cannot run.
    """
    if not 2 <= d_conv <= 4:
        raise ConfigError(f"{name}: the kernels backend supports d_conv in 2..4 (causal-conv1d), got {d_conv}")
    fused = has_causal_conv1d()
    module = build(fused=fused, d_conv=d_conv, **kwargs)
    module.backend, module.fused = "kernels", fused
    return module


def runs_fused(model: torch.nn.Module) -> bool:
    """Whether `model` or any module in it runs mamba-ssm's fused causal-conv1d path (kernel_module's `fused`)."""
    return any(getattr(m, "fused", False) for m in model.modules())
