"""Train one grid cell: `python -m align_mamba.recall.train --data DIR --out DIR [model/train flags]`.

Validation accuracy drives early stopping and the choice of the saved weights; the test split is
never opened here. A resume checkpoint is written atomically every `checkpoint_every` steps, so
the same command, rerun after a kill, continues and ends with the result an uninterrupted run gets.
Outputs in --out: model.pt (written last: it is the "finished" marker), history.csv, train.json.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from align_mamba.core.backends import resolve_backend, resolve_device
from align_mamba.core.atomic import atomic_write_json, atomic_write_text
from align_mamba.recall.checkpoint import atomic_torch_save, save_model
from align_mamba.core.cli import OneLineParser, add_dataclass_arguments, load_cell_config, setup_logging
from align_mamba.core.params import to_dict
from align_mamba.recall.config import CellConfig
from align_mamba.recall.storage import MQARSplit, load_mqar, read_manifest
from align_mamba.core.errors import ConfigError, NonFiniteLossError, run_cli
from align_mamba.core.lock import output_lock
from align_mamba.recall.evaluate import query_correctness
from align_mamba.core.gpu_slots import select_gpu
from align_mamba.recall.models import RecallModel, build_model

log = logging.getLogger("align_mamba.recall.train")
HISTORY_COLUMNS = ["step", "loss", "lr", "grad_norm", "val_accuracy", "val_exact_match"]


@dataclass
class TrainState:
    """Everything a resumed run needs besides the model and optimizer."""

    step: int = 0
    best_val: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0
    best_model: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""


def cell_name(cell: CellConfig, num_pairs: int) -> str:
    """e.g. `hybrid-0_2-np64-ds16-s0`: architecture label, then the grid coordinates."""
    return f"{cell.model.label}-np{num_pairs}-ds{cell.model.d_state}-s{cell.train.seed}"


def learning_rate(step: int, cfg) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio·lr at the step budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; norms, biases, embeddings and Mamba's dt_bias/A_log/D are exempt."""
    decay, exempt, seen = [], [], set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # the tied head shares the embedding's tensor
            continue
        seen.add(id(param))
        no_decay = param.ndim < 2 or "embedding" in name or getattr(param, "_no_weight_decay", False)
        (exempt if no_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


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
        return self._perm[offset * self.batch_size:(offset + 1) * self.batch_size]


def batch_loss(model: RecallModel, split: MQARSplit, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Cross-entropy over the query targets of the examples `idx` (logits only at queries)."""
    inputs, labels, context = split.batch(idx, device)
    query_mask = labels != -100
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(inputs, query_mask, context)  # (Nq, V)
    return F.cross_entropy(logits.float(), labels[query_mask])


def fingerprint(cell: CellConfig, data_dir: Path) -> dict:
    """What a resume checkpoint must match: the same cell on the same data files."""
    files = read_manifest(data_dir)["files"]
    return {"cell": {"model": to_dict(cell.model), "train": to_dict(cell.train)},
            "data": {name: entry["sha256"] for name, entry in sorted(files.items())}}


class Trainer:
    def __init__(self, cell: CellConfig, data_dir: Path, out_dir: Path, resume_dir: Path):
        self.cell, self.cfg = cell, cell.train
        self.out_dir, self.resume_path = out_dir, resume_dir / "last.pt"
        self.device = select_gpu(resolve_device(self.cfg.device))
        self.backend = resolve_backend(self.cfg.backend, self.device, cell.model.mixer)
        layout = cell.model.layout
        self.train_split = load_mqar(data_dir, "train", layout)
        self.val_split = load_mqar(data_dir, "validation", layout)
        self.name = cell_name(cell, self.train_split.num_pairs)
        self.fingerprint = fingerprint(cell, data_dir)
        torch.manual_seed(self.cfg.seed)
        self.model = build_model(cell.model, self.backend).to(self.device)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, self.cfg.weight_decay), lr=self.cfg.lr,
                                           betas=(0.9, 0.95), fused=self.device.type == "cuda")
        self.sampler = BatchSampler(len(self.train_split), self.cfg.batch_size, self.cfg.seed)
        self.state = TrainState()

    def resume(self) -> None:
        if not self.resume_path.is_file():
            return
        saved = torch.load(self.resume_path, map_location="cpu", weights_only=False)
        if saved["fingerprint"] != self.fingerprint:
            log.warning("%s: %s was written for other parameters or data; starting afresh", self.name, self.resume_path)
            return
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = saved["state"]
        log.info("%s: resumed at step %d from %s", self.name, self.state.step, self.resume_path)

    def save_resume(self) -> None:
        atomic_torch_save(self.resume_path, {"fingerprint": self.fingerprint, "model": self.model.state_dict(),
                                             "optimizer": self.optimizer.state_dict(), "state": self.state})

    kind = "cell"  # how errors name what is being trained

    def step_loss(self, step: int) -> torch.Tensor:
        """The training loss of batch `step` (subclasses train other models on other data)."""
        return batch_loss(self.model, self.train_split, self.sampler.indices(step), self.device)

    def train_step(self, step: int) -> dict:
        lr = learning_rate(step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss = self.step_loss(step)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"{self.kind} {self.name}: loss is {loss_value} at step {step}; stopping "
                                     f"(lr {lr:.3g})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip).item()
        if not math.isfinite(grad_norm):
            raise NonFiniteLossError(f"{self.kind} {self.name}: gradient norm is {grad_norm} at step {step}; stopping")
        self.optimizer.step()
        return {"step": step + 1, "loss": loss_value, "lr": lr, "grad_norm": grad_norm}

    def track_best(self, score: float, what: str, step: int) -> None:
        """Keep the best weights by validation `score`; set stop_reason at the target or out of patience."""
        s = self.state
        if score > s.best_val:
            s.best_val, s.best_step, s.evals_since_best = score, step, 0
            s.best_model = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        else:
            s.evals_since_best += 1
        if score >= self.cfg.target_accuracy:
            s.stop_reason = f"{what} {score:.4f} reached the target {self.cfg.target_accuracy}"
        elif s.evals_since_best >= self.cfg.patience:
            s.stop_reason = f"no validation improvement in {self.cfg.patience} evaluations"

    def validate(self, row: dict) -> None:
        correct = query_correctness(self.model, self.val_split, self.cfg.eval_batch_size, self.device)
        accuracy, exact = correct.float().mean().item(), correct.all(dim=1).float().mean().item()
        row.update(val_accuracy=accuracy, val_exact_match=exact)
        self.track_best(accuracy, "validation accuracy", row["step"])
        s = self.state
        log.info("%s: step %d/%d loss %.4f validation accuracy %.4f (best %.4f at step %d)", self.name,
                 row["step"], self.cfg.steps, row["loss"], accuracy, s.best_val, s.best_step)

    def run(self) -> dict:
        self.resume()
        started = time.time()
        s = self.state
        # disable=None: a bar on a terminal; in a job's log file the per-evaluation lines show progress
        progress = tqdm(total=self.cfg.steps, initial=s.step, desc=self.name, dynamic_ncols=True, disable=None)
        while s.step < self.cfg.steps and not s.stop_reason:
            row = self.train_step(s.step)
            s.step = row["step"]
            if s.step % self.cfg.eval_every == 0 or s.step == self.cfg.steps:
                self.validate(row)
            s.history.append(row)
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.3f}", val=f"{s.best_val:.3f}")
            if s.step % self.cfg.checkpoint_every == 0:
                self.write_history()
                self.save_resume()
        progress.close()
        return self.finish(time.time() - started)

    def write_history(self) -> None:
        frame = pd.DataFrame(self.state.history, columns=HISTORY_COLUMNS)
        atomic_write_text(self.out_dir / "history.csv", frame.to_csv(index=False))

    def finish(self, seconds: float) -> dict:
        s = self.state
        s.stop_reason = s.stop_reason or f"step budget {self.cfg.steps} reached"
        summary = {
            "cell": self.name, "architecture": self.cell.model.label, "num_pairs": self.train_split.num_pairs,
            "seed": self.cfg.seed, "steps_run": s.step,
            "best_step": s.best_step, "best_val_accuracy": s.best_val, "stop_reason": s.stop_reason,
            "backend": self.backend, "device": str(self.device), "wall_seconds_this_run": round(seconds, 2),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "model": to_dict(self.cell.model), "train": to_dict(self.cfg),
        }
        self.write_history()
        atomic_write_json(self.out_dir / "train.json", summary)
        meta = {k: summary[k] for k in ("cell", "architecture", "num_pairs", "seed", "best_step",
                                        "best_val_accuracy", "backend", "device")}
        meta["lr"] = self.cfg.lr  # the report compares entries that differ only in their learning rate
        save_model(self.out_dir / "model.pt", self.model, s.best_model, meta)
        # The resume checkpoint only recovers a killed run; kept, it would turn a deliberate
        # rerun (new code, `dvc repro -f`) into a no-op that returns the old weights.
        self.resume_path.unlink(missing_ok=True)
        log.info("%s: done (%s); best validation accuracy %.4f at step %d",
                 self.name, s.stop_reason, s.best_val, s.best_step)
        return summary


def train_cell(cell: CellConfig, data_dir: Path, out_dir: Path, resume_dir: Path | None = None) -> dict:
    """Train one cell end to end (resuming if a matching checkpoint exists); returns the summary."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory")
    trainer = Trainer(cell, data_dir, out_dir, resume_dir or out_dir / "resume")  # validates before writing
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.pt").unlink(missing_ok=True)
    return trainer.run()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.recall.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="MQAR dataset directory (with manifest.json)")
    parser.add_argument("--out", type=Path, required=True, help="output directory of this cell")
    parser.add_argument("--resume-dir", type=Path, help="where resume checkpoints live (default OUT/resume)")
    parser.add_argument("--config", type=Path, help="YAML with `model:` and `train:` sections; flags override it")
    add_dataclass_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log)
    cell = load_cell_config(args)
    with output_lock(args.out):
        train_cell(cell, args.data, args.out, args.resume_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
