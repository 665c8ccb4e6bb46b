"""Train one grid cell: `python -m align_mamba.recall.train --data DIR --out DIR [model/train flags]`.

The MQAR task for align_mamba.core.loop: batches of training examples, cross-entropy at the
queries, validation query accuracy as the selection metric; the test split is never opened here.
The loop resumes a killed run from OUT/resume/last.pt and ends with the result an uninterrupted
run gets. Outputs in --out: history.csv, train.json, then model.pt (the "finished" marker).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from align_mamba.core.cli import OneLineParser, add_dataclass_arguments, load_sections, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.core.lock import output_lock
from align_mamba.core.loop import (
    Loop,
    check_out_dir,
    learning_rate,
    parameter_groups,
    prepare_out_dir,
    resolve_run_device,
)
from align_mamba.core.params import to_dict
from align_mamba.recall.checkpoint import save_model
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
from align_mamba.recall.evaluate import query_correctness
from align_mamba.recall.models import RecallModel, build_model
from align_mamba.recall.params import add_cell_arguments, cell_from_args, require_path
from align_mamba.recall.storage import MQARSplit, load_mqar, read_manifest

__all__ = [
    "SECTIONS",
    "BatchSampler",
    "RecallTask",
    "batch_loss",
    "cell_name",
    "learning_rate",
    "parameter_groups",
    "query_loss",
    "train_cell",
]

SECTIONS = {"model": ModelConfig, "train": TrainConfig}


def cell_name(cell: CellConfig, num_pairs: int) -> str:
    """e.g. `hybrid-0_2-np64-ds16-s0`: architecture label, then the grid coordinates."""
    return f"{cell.model.label}-np{num_pairs}-ds{cell.model.d_state}-s{cell.train.seed}"


class BatchSampler:
    """Batch `step` of a fixed per-epoch shuffle: a pure function of (seed, step), so resuming needs no state."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ConfigError(f"batch_size ({batch_size}) exceeds the training set ({n} examples)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm[offset * self.batch_size : (offset + 1) * self.batch_size]


def batch_loss(model: RecallModel, split: MQARSplit, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cross-entropy over the query targets of the examples `idx` (logits only at queries).

    The queries are a fixed slice (seq2seq) or host-computed positions (decoder layout), never a
    boolean mask, so nothing here waits for the device.
    """
    return query_loss(model, *split.query_batch(idx, device))


def query_loss(
    model: RecallModel,
    inputs: torch.Tensor,
    queries: torch.Tensor | slice,
    targets: torch.Tensor,
    context: torch.Tensor | None,
    autocast_cache: bool = True,
) -> torch.Tensor:
    """Cross-entropy of the (B·M,) `targets` against the model's logits at `queries` (see
    MQARSplit.query_batch). autocast_cache=False: every cast is a kernel of this call, which a
    CUDA graph needs (a cached cast made during capture is not refreshed by a replay)."""
    device = inputs.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda", cache_enabled=autocast_cache):
        logits = model(inputs, queries, context)  # (B·M, V)
    return F.cross_entropy(logits.float(), targets)


def fingerprint(cell: CellConfig, data_dir: Path) -> dict:
    """What a resume checkpoint must match: the same cell on the same data files."""
    files = read_manifest(data_dir)["files"]
    return {
        "cell": {"model": to_dict(cell.model), "train": to_dict(cell.train)},
        "data": {name: entry["sha256"] for name, entry in sorted(files.items())},
    }


class RecallTask:
    """One MQAR cell as a core.loop.Task; selection metric: validation query accuracy."""

    kind = "cell"
    selection = "val_accuracy"
    selection_label = "validation accuracy"
    validation_columns = ["val_accuracy", "val_exact_match"]

    def __init__(self, cell: CellConfig, data_dir: Path):
        layout = cell.model.layout
        self.train_split = load_mqar(data_dir, "train", layout)
        self.val_split = load_mqar(data_dir, "validation", layout)
        # The dataset fixes the token space (data.num_keys); the embedding and output layer follow it.
        cell = dataclasses.replace(cell, model=dataclasses.replace(cell.model, vocab_size=self.train_split.vocab_size))
        self.cell, self.data_dir = cell, data_dir
        self.device, self.backend = resolve_run_device(cell.train, cell.model.mixer)
        self.name = cell_name(cell, self.train_split.num_pairs)
        self.sampler = BatchSampler(len(self.train_split), cell.train.batch_size, cell.train.seed)
        torch.manual_seed(cell.train.seed)
        self.model = build_model(cell.model, self.backend).to(self.device)

    def fingerprint(self) -> dict:
        return fingerprint(self.cell, self.data_dir)

    def step_loss(self, step: int) -> torch.Tensor:
        return batch_loss(self.model, self.train_split, self.sampler.indices(step), self.device)

    def step_inputs(self, step: int) -> tuple:
        """(inputs, queries, targets, context) of batch `step` on the device, for the speed levers:
        tensors of one shape every step, queries a fixed slice (seq2seq) or (B, M) positions."""
        return self.train_split.query_batch(self.sampler.indices(step), self.device)

    def inputs_loss(self, batch: tuple) -> torch.Tensor:
        """step_loss of a step_inputs batch (what core.fast_step compiles and captures)."""
        return query_loss(self.model, *batch, autocast_cache=False)

    def validate(self) -> dict[str, float]:
        correct = query_correctness(self.model, self.val_split, self.cell.train.eval_batch_size, self.device)
        return {
            "val_accuracy": correct.float().mean().item(),
            "val_exact_match": correct.all(dim=1).float().mean().item(),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "cell": self.name,
            "architecture": self.cell.model.label,
            "num_pairs": self.train_split.num_pairs,
            "model": to_dict(self.cell.model),
            "train": to_dict(self.cell.train),
        }

    def save_model(self, path: Path, weights: dict[str, torch.Tensor], summary: dict[str, Any]) -> None:
        meta = {
            k: summary[k]
            for k in (
                "cell",
                "architecture",
                "num_pairs",
                "seed",
                "best_step",
                "best_val_accuracy",
                "backend",
                "device",
            )
        }
        meta["lr"] = self.cell.train.lr  # the report compares entries that differ only in their learning rate
        save_model(path, self.model, weights, meta)


def train_cell(cell: CellConfig, data_dir: Path, out_dir: Path, resume_dir: Path | None = None) -> dict:
    """Train one cell end to end (resuming if a matching checkpoint exists); returns the summary."""
    check_out_dir(out_dir)
    task = RecallTask(cell, data_dir)  # validates the data before anything is written
    prepare_out_dir(out_dir)
    return Loop(task, cell.train, out_dir, resume_dir or out_dir / "resume").run()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.recall.train", description=__doc__.split("\n")[0])
    add_cell_arguments(parser)
    parser.add_argument("--data", type=Path, help="MQAR dataset directory (with manifest.json)")
    parser.add_argument("--out", type=Path, help="output directory of this cell")
    parser.add_argument("--resume-dir", type=Path, help="where resume checkpoints live (default OUT/resume)")
    parser.add_argument("--config", type=Path, help="YAML with `model:` and `train:` sections; flags override it")
    add_dataclass_arguments(parser, SECTIONS)
    args = parser.parse_args(argv)
    setup_logging(args.log)
    cell = cell_from_args(args)
    if cell is not None:
        config, data, out = CellConfig(model=cell.model, train=cell.train), Path(cell.data_dir), Path(cell.run_dir)
    else:
        config, data, out = (
            CellConfig(**load_sections(args, SECTIONS)),
            require_path(args, "data"),
            require_path(args, "out"),
        )
    out = args.out or out
    with output_lock(out):
        train_cell(config, args.data or data, out, args.resume_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
