"""Rescore the saved predictions (predictions.jsonl per split) against a dataset's labels and write
each split's scores.json again, with the current scorer (by_case included); print recall by case.

    python rescore.py DATA_DIR [PROBE_DIR]

DATA_DIR: the gpu_grid preset's secrets data (README); PROBE_DIR: the folder holding the splits'
predictions (default: this one).
"""

import json
import sys
from pathlib import Path

from align_mamba.secrets.data import load_secret_split
from align_mamba.secrets.score import score_split
from align_mamba.secrets.spans import Span

if len(sys.argv) not in (2, 3):
    sys.exit("usage: python rescore.py DATA_DIR [PROBE_DIR]")
here = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent
if not (here / "test" / "predictions.jsonl").is_file():
    sys.exit(f"{here}: no test/predictions.jsonl (PROBE_DIR is the folder an evaluate run wrote its splits to)")
for split in ("test", "test_unseen", "test_decoys"):
    files = load_secret_split(Path(sys.argv[1]), split)
    rows = [json.loads(line) for line in (here / split / "predictions.jsonl").read_text().splitlines()]
    predictions = {r["relpath"]: [Span(s["start"], s["end"], s["format"]) for s in r["spans"]] for r in rows}
    scores = score_split(files, predictions).to_dict()
    path = here / split / "scores.json"
    kept = json.loads(path.read_text())
    kept.update(scores)  # the evaluate run's timing and settings stay
    path.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
    print(split, f"span F1 {scores['span_f1']:.4f}", {r["case"]: f"{r['recalled']}/{r['true']}" for r in scores["by_case"]})
