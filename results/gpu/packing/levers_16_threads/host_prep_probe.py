"""Time the 2-layer shape's host-side batch preparation (MQARSplit.query_batch, 300 batches of 256)
in this process, with whatever OMP_NUM_THREADS it was started with. See README.md for the runs."""

import time
from pathlib import Path

import torch

from align_mamba.bench import levers
from align_mamba.recall.storage import load_mqar

data = levers.write_data(levers.SHAPES[2], Path("/tmp/hostprep_data"))
split = load_mqar(data, "train", "decoder")
generator = torch.Generator().manual_seed(0)
batches = 300
start = time.perf_counter()
for _ in range(batches):
    idx = torch.randperm(split.labels.shape[0], generator=generator)[:256]
    split.query_batch(idx, torch.device("cpu"))
print(f"threads={torch.get_num_threads()} {1e3 * (time.perf_counter() - start) / batches:.2f} ms per batch")
