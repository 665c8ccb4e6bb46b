"""Evaluate a trained tagger: `python -m align_mamba.secrets.evaluate --data DIR --checkpoint model.pt --out OUT`.

Every file of each split goes through the same chunked path a scan uses (memory bounded by
chunk_len), and the spans are scored with align_mamba.secrets.score.score_split. Writes, each
atomically: OUT/<split>/predictions.jsonl (one {"relpath", "spans": [{start, end, format, score}]}
per file, in label order), OUT/<split>/scores.json (score_split's to_dict() plus backend, device,
wall_seconds and mb_per_s of the predictions, and the inference settings), and last
OUT/summary.json (the headline numbers of every split).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from align_mamba.core.atomic import atomic_write_json, atomic_write_text
from align_mamba.core.backends import BACKENDS, resolve_device
from align_mamba.core.cli import OneLineParser, flag_names, parse_with_params, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.core.gpu_slots import select_gpu
from align_mamba.core.lock import output_lock
from align_mamba.secrets.data import SECRET_SPLITS, TEST_SPLITS, load_secret_split, read_file_bytes
from align_mamba.secrets.gate import candidate_regions
from align_mamba.secrets.infer import INFERENCE_KEYS, load_tagger, predict_spans
from align_mamba.secrets.score import score_split
from align_mamba.secrets.settings import load_secrets
from align_mamba.secrets.tagger import ByteTagger

log = logging.getLogger("align_mamba.secrets.evaluate")
HEADLINE = (
    "span_f1",
    "span_precision",
    "span_recall",
    "hit_rate",
    "byte_precision",
    "byte_recall",
    "byte_f1",
    "false_alarms",
    "false_alarms_per_mb",
    "n_decoys",
    "decoy_hits",
    "n_true",
    "n_pred",
    "files",
    "bytes",
)


def evaluate_split(
    model: ByteTagger,
    data_dir: Path,
    split: str,
    device: torch.device,
    settings: dict,
    batch_chunks: int,
    gate_margin: int | None = None,
) -> tuple[dict, list[dict]]:
    """(scores.json's content, predictions.jsonl's records) of one split.

    settings: threshold, min_span_len, chunk_len, overlap. wall_seconds and mb_per_s time the
    predictions only (files are read before the clock starts), the gate included. gate_margin: read
    only the scan gate's candidate regions with this context (gate.candidate_regions), None: every byte;
    model_bytes counts the bytes scored either way.
    """
    files = load_secret_split(data_dir, split)
    contents = [read_file_bytes(data_dir, split, lf) for lf in files]
    started = time.perf_counter()
    predictions, model_bytes = {}, 0
    for lf, data in tqdm(list(zip(files, contents)), desc=split, dynamic_ncols=True, disable=None):
        regions = [(0, len(data))] if gate_margin is None else candidate_regions(data, gate_margin)
        model_bytes += sum(end - start for start, end in regions)
        predictions[lf.relpath] = predict_spans(
            model,
            data,
            device,
            settings["chunk_len"],
            settings["overlap"],
            batch_chunks,
            settings["threshold"],
            settings["min_span_len"],
            regions,
        )
    seconds = time.perf_counter() - started
    total = sum(len(data) for data in contents)
    scores = score_split(files, predictions)
    record = {
        **scores.to_dict(),
        **settings,
        "split": split,
        "batch_chunks": batch_chunks,
        "backend": model.backend,
        "device": str(device),
        "wall_seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / seconds, 4) if seconds > 0 else None,
        "gate_margin": gate_margin,
        "model_bytes": model_bytes,
    }
    lines = [
        {
            "relpath": lf.relpath,
            "spans": [
                {"start": s.start, "end": s.end, "format": s.format, "score": s.score} for s in predictions[lf.relpath]
            ],
        }
        for lf in files
    ]
    log.info(
        "%s: span F1 %.4f (P %.4f R %.4f), byte F1 %.4f, %.3f MB/s on %s",
        split,
        scores.span_f1,
        scores.span_precision,
        scores.span_recall,
        scores.byte_f1,
        record["mb_per_s"] or 0.0,
        device,
    )
    return record, lines


def evaluate_tagger(
    checkpoint: Path,
    data_dir: Path,
    out_dir: Path,
    splits: list[str],
    device_name: str = "auto",
    backend: str = "auto",
    overrides: dict | None = None,
    batch_chunks: int = 8,
    gate_margin: int | None = None,
) -> dict:
    """Evaluate `checkpoint` on `splits`, write the per-split files and summary.json; returns the summary.

    overrides: inference settings (chunk_len, overlap, threshold, min_span_len) replacing the
    checkpoint's; None values are ignored. gate_margin: score only the scan gate's regions (evaluate_split).
    """
    unknown = [s for s in splits if s not in SECRET_SPLITS]
    if unknown:
        raise ConfigError(f"unknown split(s) {', '.join(unknown)}; known: {', '.join(SECRET_SPLITS)}")
    if batch_chunks < 1:
        raise ConfigError(f"batch_chunks must be >= 1, got {batch_chunks}")
    device = select_gpu(resolve_device(device_name))
    model, meta = load_tagger(checkpoint, device, backend)
    settings = {key: meta[key] for key in INFERENCE_KEYS}
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    summary = {
        "checkpoint": str(checkpoint),
        "name": meta.get("name"),
        "variant": model.config.variant,
        "backend": model.backend,
        "device": str(device),
        "train_backend": meta.get("train_backend"),
        "train_device": meta.get("train_device"),
        **settings,
        "gate_margin": gate_margin,
        "splits": {},
    }
    for split in splits:
        record, lines = evaluate_split(model, data_dir, split, device, settings, batch_chunks, gate_margin)
        atomic_write_json(out_dir / split / "scores.json", record)
        atomic_write_text(
            out_dir / split / "predictions.jsonl", "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        )
        summary["splits"][split] = {key: record[key] for key in HEADLINE + ("wall_seconds", "mb_per_s", "model_bytes")}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _settings(args) -> dict:
    settings = load_secrets(args.params)
    return {"splits": list(settings.evaluate.splits), "device": settings.run.device, "backend": settings.run.backend}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.secrets.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="secret-span dataset directory")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the tagger's model.pt")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--splits", nargs="+", default=list(TEST_SPLITS), choices=SECRET_SPLITS)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument(*flag_names("chunk_len"), dest="chunk_len", type=int, help="default: the checkpoint's")
    parser.add_argument("--overlap", type=int, help="default: the checkpoint's")
    parser.add_argument("--threshold", type=float, help="default: the checkpoint's")
    parser.add_argument(*flag_names("min_span_len"), dest="min_span_len", type=int, help="default: the checkpoint's")
    parser.add_argument(
        *flag_names("batch_chunks"), dest="batch_chunks", type=int, default=8, help="windows per forward pass"
    )
    parser.add_argument(
        *flag_names("gate_margin"),
        dest="gate_margin",
        type=int,
        help="score only the scan gate's candidate regions with this much context (default: every byte)",
    )
    args = parse_with_params(parser, argv, _settings)
    setup_logging(args.log)
    overrides = {k: getattr(args, k) for k in ("chunk_len", "overlap", "threshold", "min_span_len")}
    with output_lock(args.out):
        evaluate_tagger(
            args.checkpoint,
            args.data,
            args.out,
            args.splits,
            args.device,
            args.backend,
            overrides,
            args.batch_chunks,
            args.gate_margin,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
