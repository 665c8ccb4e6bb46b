"""Gated scan time with 1 vs 2 intra-op threads, alternating on the same files in one run."""
import statistics, time, torch
from pathlib import Path
from align_mamba.secrets.infer import load_tagger
from align_mamba.secrets.scan import shipped_checkpoint
from align_mamba.secrets.throughput import scan_file
dev = torch.device("cpu")
m, meta = load_tagger(shipped_checkpoint(), dev)
meta = {**meta, "gate_margin": 256}
for path in sorted(Path("/tmp/scanspeed/tpfinal").glob("*/files/*")):
    times = {1: [], 2: []}
    for _ in range(3):
        for n in (1, 2):
            torch.set_num_threads(n)
            t = time.perf_counter(); scan_file(m, meta, dev, path, 8); times[n].append(time.perf_counter() - t)
    a, b = statistics.median(times[1]), statistics.median(times[2])
    print(f"{path.parent.parent.name}: 1 thread {a:.3f}s (min {min(times[1]):.3f}), 2 threads {b:.3f}s (min {min(times[2]):.3f}), 2/1 = {b / a:.2f}", flush=True)
