"""int8 dynamic quantisation (torch.ao quantize_dynamic of every nn.Linear) with the gate: span F1 per split and
gated-scan time on the throughput files, side by side with fp32 in one run."""
import copy, statistics, sys, time, warnings
from pathlib import Path
import torch
from torch import nn
from align_mamba.secrets.evaluate import evaluate_split
from align_mamba.secrets.infer import INFERENCE_KEYS, load_tagger
from align_mamba.secrets.scan import shipped_checkpoint
from align_mamba.secrets.throughput import scan_file
warnings.filterwarnings("ignore")
dev = torch.device("cpu")
fp32, meta = load_tagger(shipped_checkpoint(), dev)
int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {nn.Linear}, dtype=torch.qint8)
models = {"fp32": fp32, "int8": int8}
files = sorted(Path("/tmp/scanspeed/tpfiles").glob("*/files/*"))
gated = {**meta, "gate_margin": 256}
times = {name: {f.name: [] for f in files} for name in models}
for f in files:
    for name, model in models.items():
        scan_file(model, gated, dev, f, 8)  # warm-up
    for _ in range(3):
        for name, model in models.items():
            start = time.perf_counter(); found = scan_file(model, gated, dev, f, 8); times[name][f.name].append(time.perf_counter() - start)
    print(f.parent.parent.name, " ".join(f"{n} {statistics.median(times[n][f.name]):.3f}s" for n in models), flush=True)
settings = {key: meta[key] for key in INFERENCE_KEYS}
for split in sys.argv[1:]:
    for name, model in models.items():
        record, _ = evaluate_split(model, Path("/tmp/scanspeed/data"), split, dev, settings, 8, 256)
        print(split, name, "span F1 %.4f P %.4f R %.4f" % (record["span_f1"], record["span_precision"], record["span_recall"]), flush=True)
