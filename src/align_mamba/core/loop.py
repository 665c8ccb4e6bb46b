"""The training loop every study shares, composed with a task that knows its data, model and metric.

    Loop(task, train_config, out_dir, resume_dir).run() -> the train.json summary

The loop owns the optimisation (AdamW with decay on matrices only, linear warm-up then cosine
decay, gradient clipping), early stopping on the task's validation selection metric (best weights
kept, `patience` evaluations without improvement, or the target reached), an atomic resume point
every `checkpoint_every` steps that makes a killed run end bit-identical to an uninterrupted one,
and the outputs: history.csv, train.json, then the task's model.pt (written last: the "finished"
marker). The test split is never the loop's business: a task validates on validation data only.

The step reads no device value: loss and gradient norm stay on the device and are brought to the
host together every SYNC_EVERY steps and at every evaluation, resume point and the end, where a
non-finite value stops the run with NonFiniteLossError naming the first bad step. A non-finite
weight stops it there too, and nothing is written unless every saved weight is finite.

The speed levers (TrainConfig.cuda_graph, TrainConfig.compile; core.fast_step) change how the
step runs, never what it computes; with both off the step is the eager one above. train.json
records which path trained the model (`train_path`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from align_mamba.core.atomic import atomic_write_json, atomic_write_text
from align_mamba.core.backends import describe_device, resolve_backend, resolve_device, runs_fused
from align_mamba.core.checkpoint import load_resume, non_finite, require_finite, save_checkpoint, set_aside
from align_mamba.core.errors import ConfigError, DataIntegrityError, NonFiniteLossError
from align_mamba.core.fast_step import (
    GraphStep,
    check_levers,
    compiled_loss,
    make_optimizer,
    set_learning_rate,
    train_path,
    use_tensor_lr,
)
from align_mamba.core.gpu_slots import select_gpu
from align_mamba.core.train_config import TrainConfig

log = logging.getLogger("align_mamba.core.loop")

STEP_COLUMNS = ["step", "loss", "lr", "grad_norm"]
# Steps between host reads of the pending losses and gradient norms: rare enough that the device
# runs ahead of Python, frequent enough that a diverged run stops within a few steps.
SYNC_EVERY = 16


class Task(Protocol):
    """What a study gives the loop. The model is built (seeded) and on `device` when the loop starts.

    kind, name: how errors and logs name the run ("cell mamba2-np64-ds16-s0", "tagger bimamba").
    selection: the validation column that picks the best weights and stops training (higher is
    better), e.g. "val_accuracy"; selection_label its words in logs, e.g. "validation accuracy".
    validation_columns: every column `validate` returns, in history.csv order.
    A task may also offer step_inputs(step) and inputs_loss(inputs), its loss in two parts, which
    the speed levers need (TrainConfig.cuda_graph, TrainConfig.compile; see core.fast_step).
    """

    kind: str
    name: str
    model: nn.Module
    device: torch.device
    backend: str
    selection: str
    selection_label: str
    validation_columns: list[str]

    def fingerprint(self) -> dict:
        """What a resume point must match: the settings and the data files' hashes."""

    def step_loss(self, step: int) -> torch.Tensor:
        """The scalar training loss of batch `step` (a pure function of the seed and `step`), on the
        device, computed without reading any device value on the host."""

    def validate(self) -> dict[str, float]:
        """The validation metrics of the current model, keyed by validation_columns."""

    def summary(self) -> dict[str, Any]:
        """train.json's fields beyond the loop's own (name, settings, data description)."""

    def save_model(self, path: Path, weights: dict[str, torch.Tensor], summary: dict[str, Any]) -> None:
        """Write the final checkpoint of `weights` (the best validation weights) to `path`."""


def resolve_run_device(cfg: TrainConfig, mixer: str) -> tuple[torch.device, str]:
    """(device, backend) a run of `mixer` uses: a free GPU slot if CUDA, the backend resolved on it."""
    device = select_gpu(resolve_device(cfg.device))
    limit_host_threads(device)
    return device, resolve_backend(cfg.backend, device, mixer)


def limit_host_threads(device: torch.device) -> None:
    """One CPU thread for a GPU run, unless OMP_NUM_THREADS says otherwise.

    A GPU run's host only indexes batches and launches kernels; one thread indexes a batch in well
    under a millisecond. With PyTorch's default of a thread per core, cells packed on one machine
    wait at each other's OpenMP barriers instead (35-40x slower batch indexing, measured with two
    processes on two cores; 8 packed cells on an H100 took 420 ms per 2-layer step whose kernels need
    about 120 ms). Snakemake exports OMP_NUM_THREADS = the rule's threads to its jobs; a run started
    by hand gets the same."""
    if device.type == "cuda" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
        log.info("GPU run: 1 CPU thread for the host side (set OMP_NUM_THREADS to change it)")


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio·lr at the step budget."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; norms, biases, embeddings and Mamba's dt_bias/A_log/D are exempt."""
    decay, exempt, seen = [], [], set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # a tied head shares the embedding's tensor
            continue
        seen.add(id(param))
        no_decay = param.ndim < 2 or "embedding" in name or getattr(param, "_no_weight_decay", False)
        (exempt if no_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


@dataclass
class TrainState:
    """Everything a resumed run needs besides the model and optimizer (plain values: loads weights-only)."""

    step: int = 0
    best_val: float = -1.0
    best_step: int = 0
    evals_since_best: int = 0
    best_model: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""


class Loop:
    def __init__(self, task: Task, cfg: TrainConfig, out_dir: Path, resume_dir: Path):
        self.task, self.cfg = task, cfg
        self.out_dir, self.resume_path = out_dir, resume_dir / "last.pt"
        self.what = f"{task.kind} {task.name}"
        check_levers(cfg.cuda_graph, cfg.compile, task)
        self.optimizer = make_optimizer(
            parameter_groups(task.model, cfg.weight_decay), cfg.lr, task.device, cfg.cuda_graph
        )
        # compile: the task's loss traced once; cuda_graph: the whole update replayed from one capture
        self.loss_fn = compiled_loss(task, cfg.compile) if cfg.compile != "none" else None
        self.graph = GraphStep(task.device, self.loss_fn or task.inputs_loss, self.update) if cfg.cuda_graph else None
        self.fingerprint = task.fingerprint()
        self.state = TrainState()
        self.columns = STEP_COLUMNS + list(task.validation_columns)
        self._pending: list[tuple[dict, torch.Tensor]] = []  # rows whose loss and grad norm are on the device

    # ---- resume --------------------------------------------------------------------------------

    def resume(self) -> None:
        saved = load_resume(self.resume_path, self.fingerprint, self.task.name)
        if saved is None:
            return
        fresh = copy.deepcopy((self.task.model.state_dict(), self.optimizer.state_dict()))
        try:
            self.state = TrainState(**saved["state"])
            self.task.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            # Intact and of these settings, yet not restorable (written by other code): start afresh
            # from the untouched initial weights rather than fail on every rerun.
            self.state = TrainState()
            self.task.model.load_state_dict(fresh[0])
            self.optimizer.load_state_dict(fresh[1])
            moved = set_aside(self.resume_path, "unusable")
            log.warning(
                "%s: %s does not restore (%s: %s); moved it to %s and starting afresh",
                self.task.name,
                self.resume_path,
                type(err).__name__,
                " ".join(str(err).split())[:120],
                moved.name,
            )
            return
        if self.cfg.cuda_graph:  # the loaded groups hold the saved learning rate, not the device tensor
            use_tensor_lr(self.optimizer, self.task.device)
        log.info("%s: resumed at step %d from %s", self.task.name, self.state.step, self.resume_path)

    def save_resume(self) -> None:
        require_finite(self.task.model.state_dict(), f"{self.what} at step {self.state.step}")
        save_checkpoint(
            self.resume_path,
            {
                "fingerprint": self.fingerprint,
                "model": self.task.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "state": dataclasses.asdict(self.state),
            },
        )

    # ---- the step ------------------------------------------------------------------------------

    def train_step(self, step: int) -> tuple[dict, torch.Tensor]:
        """One update. Returns the history row (host values) and (2,) [loss, grad norm] on the device."""
        lr = learning_rate(step, self.cfg)
        set_learning_rate(self.optimizer, lr)
        self.task.model.train()
        if self.graph is not None:
            values = self.graph(self.task.step_inputs(step))
        elif self.loss_fn is not None:
            values = self.update(self.loss_fn(self.task.step_inputs(step)))
        else:
            values = self.update(self.task.step_loss(step))
        return {"step": step + 1, "lr": lr}, values

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward, clip, optimizer step; (2,) [loss, grad norm] on the device. Reads no device
        value, so it can be captured (zero_grad is a no-op at capture: the grads are None there)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.task.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return torch.stack([loss.detach().float(), grad_norm.detach().float()])

    def sync(self) -> None:
        """Bring the pending losses and gradient norms to the host (one transfer) and check them and
        the weights; NonFiniteLossError names the first bad step."""
        if not self._pending:
            return
        values = torch.stack([v for _, v in self._pending]).cpu().tolist()
        rows = [row for row, _ in self._pending]
        self._pending = []
        for row, (loss, grad_norm) in zip(rows, values):
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"{self.what}: loss is {loss} at step {row['step'] - 1}; stopping (lr {row['lr']:.3g})"
                )
            if not math.isfinite(grad_norm):
                raise NonFiniteLossError(
                    f"{self.what}: gradient norm is {grad_norm} at step {row['step'] - 1}; stopping"
                )
            row.update(loss=loss, grad_norm=grad_norm)
        bad = non_finite(dict(self.task.model.named_parameters()))
        if bad:
            raise NonFiniteLossError(
                f"{self.what}: weights became non-finite by step {rows[-1]['step']} "
                f"({', '.join(bad[:3])}) though loss and gradients were finite; stopping "
                f"(lr {rows[-1]['lr']:.3g})"
            )

    # ---- validation and stopping ---------------------------------------------------------------

    def track_best(self, score: float, step: int) -> None:
        """Keep the best weights by validation `score`; set stop_reason at the target or out of patience."""
        s, label = self.state, self.task.selection_label
        if score > s.best_val:
            s.best_val, s.best_step, s.evals_since_best = score, step, 0
            s.best_model = copy.deepcopy({k: v.detach().cpu() for k, v in self.task.model.state_dict().items()})
        else:
            s.evals_since_best += 1
        if score >= self.cfg.target_accuracy:
            s.stop_reason = f"{label} {score:.4f} reached the target {self.cfg.target_accuracy}"
        elif self.cfg.patience and s.evals_since_best >= self.cfg.patience:
            s.stop_reason = f"no validation improvement in {self.cfg.patience} evaluations"

    def validate(self, row: dict) -> None:
        metrics = self.task.validate()
        row.update(metrics)
        score = metrics[self.task.selection]
        if not math.isfinite(score):
            raise NonFiniteLossError(f"{self.what}: {self.task.selection_label} is {score} at step {row['step']}")
        self.track_best(score, row["step"])
        s = self.state
        log.info(
            "%s: step %d/%d loss %.4f %s %.4f (best %.4f at step %d)",
            self.task.name,
            row["step"],
            self.cfg.steps,
            row["loss"],
            self.task.selection_label,
            score,
            s.best_val,
            s.best_step,
        )

    # ---- the run -------------------------------------------------------------------------------

    def run(self) -> dict:
        self.resume()
        started = time.time()
        s, cfg = self.state, self.cfg
        # disable=None: a bar on a terminal; in a job's log file the per-evaluation lines show progress
        progress = tqdm(total=cfg.steps, initial=s.step, desc=self.task.name, dynamic_ncols=True, disable=None)
        while s.step < cfg.steps and not s.stop_reason:
            row, values = self.train_step(s.step)
            s.step = row["step"]
            s.history.append(row)
            self._pending.append((row, values))
            evaluate = s.step % cfg.eval_every == 0 or s.step == cfg.steps
            checkpoint = s.step % cfg.checkpoint_every == 0
            if evaluate or checkpoint or s.step % SYNC_EVERY == 0:
                self.sync()
                progress.set_postfix(loss=f"{row['loss']:.3f}", val=f"{s.best_val:.3f}")
            if evaluate:
                self.validate(row)
            progress.update(1)
            if checkpoint:
                self.write_history()
                self.save_resume()
        self.sync()
        progress.close()
        return self.finish(time.time() - started)

    def write_history(self) -> None:
        frame = pd.DataFrame(self.state.history, columns=self.columns)
        atomic_write_text(self.out_dir / "history.csv", frame.to_csv(index=False))

    def finish(self, seconds: float) -> dict:
        s, task = self.state, self.task
        s.stop_reason = s.stop_reason or f"step budget {self.cfg.steps} reached"
        if not s.best_model:  # the last step always validates, so this means a broken resume point
            raise DataIntegrityError(f"{self.what}: no validated weights to save; delete {self.resume_path}")
        require_finite(s.best_model, f"{self.what} (best weights of step {s.best_step})")
        summary = {
            **task.summary(),
            "seed": self.cfg.seed,
            "steps_run": s.step,
            "best_step": s.best_step,
            f"best_{task.selection}": s.best_val,
            "stop_reason": s.stop_reason,
            "backend": task.backend,
            "device": describe_device(task.device),
            "train_path": train_path(self.cfg.cuda_graph, self.cfg.compile, runs_fused(task.model)),
            "wall_seconds_this_run": round(seconds, 2),
            "parameters": sum(p.numel() for p in task.model.parameters()),
        }
        self.write_history()
        atomic_write_json(self.out_dir / "train.json", summary)
        task.save_model(self.out_dir / "model.pt", s.best_model, summary)
        # The resume checkpoint only recovers a killed run; kept, it would turn a deliberate
        # rerun (new code, `dvc repro -f`) into a no-op that returns the old weights.
        self.resume_path.unlink(missing_ok=True)
        log.info(
            "%s: done (%s); best %s %.4f at step %d",
            task.name,
            s.stop_reason,
            task.selection_label,
            s.best_val,
            s.best_step,
        )
        return summary


def check_out_dir(out_dir: Path) -> None:
    """ConfigError unless `out_dir` is a directory or absent (checked before any data is read)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory")


def prepare_out_dir(out_dir: Path) -> None:
    """Make `out_dir` for a fresh result; its old model.pt goes first, so a run that fails never
    leaves a previous run's "finished" marker beside its own partial files."""
    check_out_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.pt").unlink(missing_ok=True)
