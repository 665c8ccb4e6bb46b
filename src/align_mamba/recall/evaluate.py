"""Evaluate one trained cell on test splits: `python -m align_mamba.recall.evaluate --checkpoint model.pt --data DIR...`.

The first --data directory should be the cell's own num_pairs; further ones measure how recall
carries to other numbers of pairs. Writes one metrics JSON (recall.metrics.CellMetrics, versioned) with
the cell's settings, its validation curve and final training loss (from the training record beside
the checkpoint), the backend
and device that ran, the state size in floats, and per slice: per-query accuracy, per-sequence
exact match, accuracy by the queried key's position (deciles of the context) and by key→query
distance (powers of two), each with its count. It also scores the first TRAIN_CHECK examples of the
cell's own training split: far above the test accuracy, it says the model memorised its training
contexts instead of learning recall (a pure Mamba decoder does so when examples repeat often).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from align_mamba.core.atomic import atomic_write_json
from align_mamba.core.backends import BACKENDS, describe_device, resolve_device
from align_mamba.core.cli import OneLineParser, flag_names, setup_logging
from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.core.gpu_slots import select_gpu
from align_mamba.core.lock import output_lock
from align_mamba.core.params import from_mapping
from align_mamba.recall.checkpoint import load_model
from align_mamba.recall.config import TrainConfig
from align_mamba.recall.metrics import (
    FINAL_LOSS_STEPS,
    Bucket,
    CellMetrics,
    CellRecord,
    Slice,
    StateSize,
    ValidationPoint,
    chance_loss,
    read_json,
)
from align_mamba.recall.models import RecallModel, state_size_floats
from align_mamba.recall.params import (
    Cell,
    add_cell_arguments,
    cell_from_args,
    cell_record,
    load_recall_params,
    require_path,
)
from align_mamba.recall.storage import MQARSplit, load_mqar, read_manifest

log = logging.getLogger("align_mamba.recall.evaluate")

TRAIN_CHECK = 1000


@torch.no_grad()
def query_correctness(model: RecallModel, split: MQARSplit, batch_size: int, device: torch.device) -> torch.Tensor:
    """(n, M) bool: whether the model's argmax at each query equals the key's value."""
    model.eval()
    rows = []
    for start in range(0, len(split), batch_size):
        batch = slice(start, start + batch_size)
        inputs, queries, targets, context = split.query_batch(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(inputs, queries, context)  # (B·M, V), queries in order
        rows.append((logits.argmax(-1) == targets).view(len(inputs), -1).cpu())
    return torch.cat(rows)


def _buckets(correct: torch.Tensor, groups: torch.Tensor, bounds: list[tuple[float, float]]) -> tuple[Bucket, ...]:
    """Accuracy and count of `correct` (flat) per integer group id; group i spans bounds[i]."""
    out = []
    for group, (low, high) in enumerate(bounds):
        selected = correct[groups == group]
        if selected.numel():
            out.append(Bucket(low=low, high=high, accuracy=selected.float().mean().item(), count=selected.numel()))
    return tuple(out)


def slice_metrics(correct: torch.Tensor, split: MQARSplit, data: str = "") -> Slice:
    """Headline and breakdown metrics of one test slice; `correct` is (n, M) bool."""
    flat = correct.reshape(-1)
    decile = (split.query_slot.reshape(-1) * 10) // split.num_pairs
    distance_bin = torch.log2(split.query_distance.reshape(-1).clamp(min=1).float()).floor().long()
    n_bins = int(distance_bin.max().item()) + 1
    return Slice(
        data=data,
        num_pairs=split.num_pairs,
        accuracy=flat.float().mean().item(),
        exact_match=correct.all(dim=1).float().mean().item(),
        sequences=correct.shape[0],
        queries=flat.numel(),
        by_key_position=_buckets(flat, decile, [(d / 10, (d + 1) / 10) for d in range(10)]),
        by_distance=_buckets(flat, distance_bin, [(float(2**b), float(2 ** (b + 1))) for b in range(n_bins)]),
    )


def _training_record(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """train.json and history.csv that `recall.train` wrote beside the checkpoint."""
    paths = run_dir / "train.json", run_dir / "history.csv"
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise DataIntegrityError(
            f"{', '.join(missing)} not found: the checkpoint's training record "
            f"(written by python -m align_mamba.recall.train) must lie beside it"
        )
    return read_json(paths[0]), pd.read_csv(paths[1])


def evaluate_cell(checkpoint: Path, data_dirs: list[Path], backend: str, device_name: str, batch_size: int) -> dict:
    """Metrics of one checkpoint on the test split of each data directory (the first is its own),
    as `CellMetrics.to_json()`; the training record beside the checkpoint gives the curve and loss."""
    started = time.time()
    device = select_gpu(resolve_device(device_name))
    model, meta = load_model(checkpoint, backend, device)
    own_pairs = read_manifest(data_dirs[0])["config"]["num_pairs"]
    if own_pairs != meta["num_pairs"]:
        raise ConfigError(
            f"the first --data ({data_dirs[0]}, num_pairs {own_pairs}) must be the cell's own "
            f"test set (num_pairs {meta['num_pairs']})"
        )
    summary, history = _training_record(Path(checkpoint).parent)
    slices, context_len = [], None
    for data_dir in data_dirs:
        split = load_mqar(data_dir, "test", model.config.layout)
        if split.vocab_size != model.config.vocab_size:
            raise ConfigError(
                f"{data_dir} has a vocabulary of {split.vocab_size} tokens, the model "
                f"{model.config.vocab_size}: data.num_keys differs from the training data's"
            )
        if context_len is None:  # the state size is counted on the cell's own context length
            context_len = (split.enc_inputs if split.enc_inputs is not None else split.inputs).shape[1]
        slices.append(slice_metrics(query_correctness(model, split, batch_size, device), split, str(data_dir)))
        log.info("%s on %s: accuracy %.4f", meta["cell"], data_dir, slices[-1].accuracy)
    own = slices[0]
    seen = load_mqar(data_dirs[0], "train", model.config.layout).head(TRAIN_CHECK)
    train_accuracy = query_correctness(model, seen, batch_size, device).float().mean().item()
    log.info("%s on its first %d training examples: accuracy %.4f", meta["cell"], len(seen), train_accuracy)
    validated = history.dropna(subset=["val_accuracy"])
    train_config = from_mapping(TrainConfig, summary["train"], f"{Path(checkpoint).parent / 'train.json'}: train")
    record = cell_record(
        Cell(
            architecture=meta["architecture"],
            num_pairs=meta["num_pairs"],
            model=model.config,
            train=train_config,
            suffix="",
            experiments=(),
        )
    )
    metrics = CellMetrics(
        cell=CellRecord.from_json(record),
        accuracy=own.accuracy,
        exact_match=own.exact_match,
        val_accuracy=float(meta["best_val_accuracy"]),
        best_step=int(meta["best_step"]),
        train_accuracy=train_accuracy,
        train_examples_checked=len(seen),
        steps_trained=int(summary["steps_run"]),
        stop_reason=str(summary["stop_reason"]),
        validation=tuple(
            ValidationPoint(step=int(r.step), accuracy=float(r.val_accuracy), exact_match=float(r.val_exact_match))
            for r in validated.itertuples()
        ),
        final_train_loss=float(history["loss"].tail(FINAL_LOSS_STEPS).mean()),
        chance_loss=chance_loss(seen.num_values),
        state_size=StateSize(**state_size_floats(model.config, context_len)),
        parameters=sum(p.numel() for p in model.parameters()),
        backend=model.backend,
        device=describe_device(device),
        train_backend=str(meta["backend"]),
        train_device=str(meta["device"]),
        wall_seconds=round(time.time() - started, 2),
        slices=tuple(slices),
    )
    return metrics.to_json()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.recall.evaluate", description=__doc__.split("\n")[0])
    add_cell_arguments(parser)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path, nargs="+", help="test data dirs; the first is the cell's own")
    parser.add_argument("--out", type=Path, help="metrics JSON to write")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="auto")
    parser.add_argument(*flag_names("batch_size"), dest="batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    setup_logging(args.log)
    cell = cell_from_args(args)
    if cell is None:
        checkpoint, data, out = (
            require_path(args, "checkpoint"),
            require_path(args, "data"),
            require_path(args, "out"),
        )
        backend, device, batch_size, record = args.backend, args.device, args.batch_size, {}
    else:
        params = load_recall_params(args.params)
        checkpoint, data, out = Path(cell.run_dir) / "model.pt", [Path(cell.data_dir)], Path(cell.metrics)
        backend, device, batch_size = params.run.backend, params.run.device, params.evaluate.batch_size
        record = {"cell": cell_record(cell)}
    out = args.out or out
    with output_lock(out):
        metrics = evaluate_cell(args.checkpoint or checkpoint, args.data or data, backend, device, batch_size)
        atomic_write_json(out, {**metrics, **record})
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
