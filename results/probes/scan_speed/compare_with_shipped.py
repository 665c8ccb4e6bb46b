"""Gated CPU predictions vs the shipped checkpoint's recorded (ungated, GPU) ones: F1, lost true spans, identical spans."""
import json, sys
from pathlib import Path
from align_mamba.secrets.data import load_secret_split
from align_mamba.secrets.score import match_spans, merge_spans, score_split
from align_mamba.secrets.spans import Span

def load(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        out[rec["relpath"]] = [Span(s["start"], s["end"], s["format"], s["score"]) for s in rec["spans"]]
    return out

data, ref_dir, new_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
for split in ("test", "test_unseen", "test_decoys"):
    files = load_secret_split(data, split)
    ref, new = load(ref_dir / split / "predictions.jsonl"), load(new_dir / split / "predictions.jsonl")
    sr, sn = score_split(files, ref), score_split(files, new)
    lost = gained = same = 0
    for lf in files:
        found = lambda preds: {t for t, _ in match_spans(lf.spans, merge_spans(preds.get(lf.relpath, [])))}
        r, n = found(ref), found(new)
        lost += len(r - n); gained += len(n - r)
        same += len({(s.start, s.end, s.format) for s in ref.get(lf.relpath, [])} & {(s.start, s.end, s.format) for s in new.get(lf.relpath, [])})
    print(f"{split}: span F1 ref {sr.span_f1:.4f} new {sn.span_f1:.4f} | P {sr.span_precision:.4f}->{sn.span_precision:.4f} R {sr.span_recall:.4f}->{sn.span_recall:.4f} | "
          f"true spans found by ref, lost by new: {lost}, gained: {gained} | spans ref {sum(map(len, ref.values()))} new {sum(map(len, new.values()))} identical {same}")
