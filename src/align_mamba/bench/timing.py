"""Timing one call the way GPU benchmarks must: warm-up excluded, fresh inputs, synchronised clocks.

Triton compiles (and autotunes) a kernel on its first call, and CUDA launches are asynchronous, so
`time_call` runs `warmup` untimed calls first, builds every repeat's inputs before its timed region,
times the region with CUDA events around a synchronised stream, and reports the median. Peak memory
is torch's allocator peak above what was allocated when the timed region began (the module, its
states and the inputs); on the CPU torch exposes no allocator statistics and the process RSS also
counts the allocator's cached pages, so there the peak is NaN rather than a number that means
something else.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

MIB = 2**20


class CaseSkipped(Exception):
    """A case (or one mode of it) cannot run here; the message is the row's reason."""


@dataclass(frozen=True)
class Timing:
    """Median and every repeat of one timed call, and the peak memory above its inputs."""

    median_ms: float
    times_ms: tuple[float, ...]
    peak_mib: float


@dataclass(frozen=True)
class Workload:
    """One benchmarked call: `make_inputs()` (untimed) builds fresh inputs, `run(inputs)` is timed.

    state_bytes: bytes of the decode cache or recurrent state the call reads (0 outside decode).
    """

    make_inputs: Callable[[], Any]
    run: Callable[[Any], Any]
    state_bytes: int = 0


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count); an empty list is an error."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def is_oom(error: BaseException) -> bool:
    """True for torch.OutOfMemoryError and for a RuntimeError whose text says out of memory
    (cuBLAS, cuDNN and Triton report allocation failures that way)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, for a row's reason."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def free_memory() -> None:
    """Return what an aborted call left behind (call it outside the `except` block that caught it,
    whose traceback still references the failed call's tensors)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _time_once_cuda(workload: Workload, inputs: Any) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    workload.run(inputs)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end), (torch.cuda.max_memory_allocated() - base) / MIB


def _time_once_cpu(workload: Workload, inputs: Any) -> tuple[float, float]:
    start = time.perf_counter()
    workload.run(inputs)
    return (time.perf_counter() - start) * 1e3, math.nan


def time_call(workload: Workload, device: torch.device, repeats: int, warmup: int) -> Timing:
    """Median wall time of `workload.run` over `repeats` calls after `warmup` untimed ones.

    Each call gets fresh inputs from `make_inputs()`, built before its timed region; peak_mib is
    the largest peak over the repeats (NaN on the CPU, see the module docstring).
    """
    once = _time_once_cuda if device.type == "cuda" else _time_once_cpu
    for _ in range(warmup):
        workload.run(workload.make_inputs())
    if device.type == "cuda":
        torch.cuda.synchronize()
    times, peaks = [], []
    for _ in range(repeats):
        inputs = workload.make_inputs()
        elapsed, peak = once(workload, inputs)
        del inputs
        times.append(elapsed)
        peaks.append(peak)
    peak = math.nan if any(math.isnan(p) for p in peaks) else max(peaks)
    return Timing(median(times), tuple(times), peak)
