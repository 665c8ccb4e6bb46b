"""The benchmark stage: mixer/architecture throughput and memory, decode, and the training-step ladder.

`python -m align_mamba.bench` runs it; `run_bench(BenchConfig(...), out)` is the same from Python.
"""

from align_mamba.bench.config import BenchConfig, batch_size, load_bench_config
from align_mamba.bench.run import COLUMNS, run_bench
from align_mamba.bench.summary import Crossover, crossover, crossovers, wrapper_tax
from align_mamba.bench.timing import Timing, Workload, is_oom, median, time_call

__all__ = [
    "COLUMNS",
    "BenchConfig",
    "Crossover",
    "Timing",
    "Workload",
    "batch_size",
    "crossover",
    "crossovers",
    "is_oom",
    "load_bench_config",
    "median",
    "run_bench",
    "time_call",
    "wrapper_tax",
]
