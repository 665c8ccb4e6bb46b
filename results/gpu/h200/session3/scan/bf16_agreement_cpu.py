"""CPU check: spans of the H100-trained tagger with fp32 weights vs bf16 weights on the throughput files."""
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, "/work/main/src")
from align_mamba.secrets.throughput import build_files, tune_tagger
from align_mamba.secrets.infer import load_tagger, predict_spans
torch.set_num_threads(2)
files = build_files(Path("/tmp/agree/files"), [float(sys.argv[1])], ["log", "python", "yaml"], seed=0)
cpu = torch.device("cpu")
for weights in ("float32", "bfloat16"):
    model, meta = load_tagger(Path("/work/main/results/gpu/secrets/bimamba/model.pt"), cpu, "reference")
    tune_tagger(model, weights, None)
    for f in files:
        t = time.time()
        spans = predict_spans(model, f.path.read_bytes(), cpu, meta["chunk_len"], meta["overlap"], 8,
                              meta["threshold"], meta["min_span_len"])
        print(weights, f.kind, f.path.stat().st_size, f"{time.time()-t:.1f}s", [(s.start, s.end, s.format, round(s.score, 3)) for s in spans], flush=True)
