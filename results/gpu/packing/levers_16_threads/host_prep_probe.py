import sys, time, torch
from pathlib import Path
from align_mamba.bench import levers
from align_mamba.recall.storage import load_mqar
data = levers.write_data(levers.SHAPES[2], Path("/tmp/hostprep_data"))
split = load_mqar(data, "train", "decoder")
dev = torch.device("cpu")
g = torch.Generator().manual_seed(0)
t0 = time.perf_counter(); n = 300
for i in range(n):
    idx = torch.randperm(split.labels.shape[0], generator=g)[:256]
    split.query_batch(idx, dev)
print(f"threads={torch.get_num_threads()} {1e3*(time.perf_counter()-t0)/n:.2f} ms per batch")
