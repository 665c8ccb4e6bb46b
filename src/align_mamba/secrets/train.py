"""Train the byte tagger: `python -m align_mamba.secrets.train --data DIR --out DIR [flags]`.

Batches are crops of `crop_len` bytes from the train split (with probability secret_crop_prob a
crop around a random planted secret, else a uniform one), a pure function of (seed, step); the
loss is per-byte cross-entropy with weight `secret_weight` on secret classes. Every eval_every
steps the model scans the VALIDATION files through chunked inference and its span F1 drives early
stopping and the saved weights; the test splits are never opened here. This is the tagger's task
for align_mamba.core.loop, which owns the optimisation, resume and non-finite checks. Outputs in
--out: history.csv, train.json, then model.pt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from align_mamba.core.cli import (
    OneLineParser,
    add_dataclass_arguments,
    flag_names,
    load_sections,
    parse_with_params,
    setup_logging,
)
from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.core.lock import output_lock
from align_mamba.core.loop import Loop, check_out_dir, prepare_out_dir, resolve_run_device
from align_mamba.core.params import require, require_positive, to_dict
from align_mamba.core.train_config import TrainConfig
from align_mamba.secrets.data import load_secret_split, read_file_bytes, read_secret_manifest
from align_mamba.secrets.infer import predict_spans, save_tagger, warm_start
from align_mamba.secrets.score import SplitScores, score_split
from align_mamba.secrets.spans import LabelledFile, mask_to_ranges
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

HISTORY_COLUMNS = [
    "step",
    "loss",
    "lr",
    "grad_norm",
    "val_span_f1",
    "val_span_precision",
    "val_span_recall",
    "val_byte_f1",
]
IGNORE = -100  # label of the padding after a file shorter than crop_len


@dataclass(frozen=True)
class TaggerTrainConfig:
    """The tagger's settings beyond TrainConfig: crops, loss weight, and the inference it saves.

    threshold, min_span_len, chunk_len, overlap are used by validation and stored in model.pt as
    the defaults of every later scan. (TrainConfig.target_accuracy is the validation span F1 at
    which training stops; eval_batch_size is the number of windows per inference batch.)
    """

    crop_len: int = 1024
    secret_crop_prob: float = 0.5
    secret_weight: float = 5.0
    threshold: float = 0.5
    min_span_len: int = 8
    chunk_len: int = 32768
    overlap: int = 1024

    def __post_init__(self) -> None:
        require_positive(self, "crop_len", "secret_weight", "min_span_len", "chunk_len")
        require(0 <= self.secret_crop_prob <= 1, f"secret_crop_prob must be in [0, 1], got {self.secret_crop_prob}")
        require(0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold}")
        require(self.overlap >= 0, f"overlap must be >= 0, got {self.overlap}")


SECTIONS = {"model": TaggerConfig, "train": TrainConfig, "tagger": TaggerTrainConfig}


@dataclass(frozen=True)
class TaggerRun:
    """Everything that defines one training run (the `--config` YAML has these three sections)."""

    model: TaggerConfig = field(default_factory=TaggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tagger: TaggerTrainConfig = field(default_factory=TaggerTrainConfig)


class CropSampler:
    """Training batches of byte crops with per-byte class labels: a pure function of (seed, step)."""

    def __init__(self, files: list[np.ndarray], labels: list[np.ndarray], run: TaggerRun):
        self.files, self.labels = files, labels
        self.crop_len, self.batch_size = run.tagger.crop_len, run.train.batch_size
        self.secret_prob, self.seed = run.tagger.secret_crop_prob, run.train.seed
        self.secrets = [(i, a, b) for i, lab in enumerate(labels) for a, b in mask_to_ranges(lab)]  # (file, start, end)
        positions = np.array([max(1, len(f) - self.crop_len + 1) for f in files], dtype=np.float64)
        self.file_weights = positions / positions.sum()  # uniform over crop positions

    def _start(self, rng: np.random.Generator) -> tuple[int, int]:
        """(file index, crop start) of one crop."""
        if self.secrets and rng.random() < self.secret_prob:
            index, a, b = self.secrets[rng.integers(len(self.secrets))]
            slack = len(self.files[index]) - self.crop_len
            if slack <= 0:
                return index, 0
            lo, hi = max(0, b - self.crop_len), min(a, slack)
            if lo > hi:  # a secret longer than the crop (a PEM block): a crop inside it
                lo, hi = a, b - self.crop_len
            return index, int(rng.integers(lo, hi + 1))
        index = int(rng.choice(len(self.files), p=self.file_weights))
        return index, int(rng.integers(0, max(0, len(self.files[index]) - self.crop_len) + 1))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, crop_len) int64 bytes and (B, crop_len) int64 classes (IGNORE after a short file's end)."""
        rng = np.random.default_rng([self.seed, step])
        ids = np.zeros((self.batch_size, self.crop_len), dtype=np.int64)
        classes = np.full((self.batch_size, self.crop_len), IGNORE, dtype=np.int64)
        for row in range(self.batch_size):
            index, start = self._start(rng)
            crop = self.files[index][start : start + self.crop_len]
            ids[row, : len(crop)] = crop
            classes[row, : len(crop)] = self.labels[index][start : start + self.crop_len]
        return torch.from_numpy(ids), torch.from_numpy(classes)


def load_labelled(
    data_dir: Path, split: str, class_names: tuple[str, ...]
) -> tuple[list[LabelledFile], list[bytes], list[np.ndarray]]:
    """(labelled files, their bytes, their (len,) int64 class per byte) of one split; 0 = none."""
    index = {name: k for k, name in enumerate(class_names)}
    files = load_secret_split(data_dir, split)
    contents, labels = [], []
    for lf in files:
        data = read_file_bytes(data_dir, split, lf)
        classes = np.zeros(len(data), dtype=np.int64)
        for span in lf.spans:
            if span.format not in index:
                raise DataIntegrityError(
                    f"{split}/{lf.relpath}: span format {span.format!r} is not in the manifest's formats"
                )
            classes[span.start : span.end] = index[span.format]
        contents.append(data)
        labels.append(classes)
    return files, contents, labels


def fingerprint(run: TaggerRun, manifest: dict) -> dict:
    """What a resume checkpoint must match: the same settings on the same train/validation files."""
    data = {
        name: entry["sha256"]
        for name, entry in sorted(manifest["files"].items())
        if name.split("/")[0] in ("train", "validation")
    }
    return {"run": {section: to_dict(getattr(run, section)) for section in SECTIONS}, "data": data}


class TaggerTask:
    """One tagger run as a core.loop.Task: byte crops, weighted per-byte loss, validation span F1."""

    kind = "tagger"
    selection = "val_span_f1"
    selection_label = "validation span F1"
    validation_columns = HISTORY_COLUMNS[4:]

    def __init__(self, run: TaggerRun, data_dir: Path, name: str, init_from: Path | None = None):
        self.run_config, self.cfg, self.name = run, run.train, name
        self.device, self.backend = resolve_run_device(self.cfg, run.model.mixer)
        self.manifest = read_secret_manifest(data_dir)
        self.formats = self.manifest["formats"]
        self.class_names = ("none",) + tuple(self.formats["all"])
        _, contents, labels = load_labelled(data_dir, "train", self.class_names)
        if not contents:
            raise DataIntegrityError(f"{data_dir}: the train split has no files")
        self.val_files, self.val_bytes, _ = load_labelled(data_dir, "validation", self.class_names)
        if not self.val_files:
            raise DataIntegrityError(f"{data_dir}: the validation split has no files (early stopping needs them)")
        self.sampler = CropSampler([np.frombuffer(data, dtype=np.uint8) for data in contents], labels, run)
        torch.manual_seed(self.cfg.seed)
        self.model = ByteTagger(run.model, self.backend, len(self.class_names), self.class_names)
        # continued training of a saved tagger (e.g. the shipped one on harder data): its weights, not random ones
        self.init_from = warm_start(self.model, init_from) if init_from is not None else None
        self.model = self.model.to(self.device)
        weights = torch.full((len(self.class_names),), run.tagger.secret_weight)
        weights[0] = 1.0
        self.class_weights = weights.to(self.device)

    def fingerprint(self) -> dict:
        start = {"init_from": self.init_from["sha256"]} if self.init_from else {}
        return {**fingerprint(self.run_config, self.manifest), **start}

    def step_loss(self, step: int) -> torch.Tensor:
        """Per-byte cross-entropy of crop batch `step`, secret bytes weighted by secret_weight."""
        ids, classes = (t.to(self.device, non_blocking=True) for t in self.sampler.batch(step))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(ids)  # (B, L, C)
        return F.cross_entropy(
            logits.float().flatten(0, 1), classes.flatten(), weight=self.class_weights, ignore_index=IGNORE
        )

    def validation_scores(self) -> SplitScores:
        """score_split of the model's chunked predictions on every validation file."""
        t = self.run_config.tagger
        predictions = {
            lf.relpath: predict_spans(
                self.model,
                data,
                self.device,
                t.chunk_len,
                t.overlap,
                self.cfg.eval_batch_size,
                t.threshold,
                t.min_span_len,
            )
            for lf, data in zip(self.val_files, self.val_bytes)
        }
        return score_split(self.val_files, predictions)

    def validate(self) -> dict[str, float]:
        scores = self.validation_scores()
        return {
            "val_span_f1": scores.span_f1,
            "val_span_precision": scores.span_precision,
            "val_span_recall": scores.span_recall,
            "val_byte_f1": scores.byte_f1,
        }

    def summary(self) -> dict[str, Any]:
        run = self.run_config
        return {
            "name": self.name,
            "variant": run.model.variant,
            "class_names": list(self.class_names),
            "formats": self.formats,
            "init_from": self.init_from,
            **{section: to_dict(getattr(run, section)) for section in SECTIONS},
        }

    def save_model(self, path: Path, weights: dict[str, torch.Tensor], summary: dict[str, Any]) -> None:
        inference = self.run_config.tagger
        meta = {
            **{
                k: summary[k]
                for k in ("name", "variant", "seed", "best_step", "best_val_span_f1", "formats", "init_from")
            },
            **{k: getattr(inference, k) for k in ("threshold", "min_span_len", "chunk_len", "overlap")},
            "train_backend": self.backend,
            "train_device": str(self.device),
        }
        save_tagger(path, self.model, meta, weights)


def train_tagger(
    run: TaggerRun,
    data_dir: Path,
    out_dir: Path,
    resume_dir: Path | None = None,
    name: str | None = None,
    init_from: Path | None = None,
) -> dict:
    """Train one tagger end to end (resuming if a matching checkpoint exists); returns train.json's summary.

    init_from: a saved tagger of the same config to continue from (`warm_start`) instead of random weights.
    """
    check_out_dir(out_dir)
    task = TaggerTask(run, data_dir, name or out_dir.name, init_from)  # validates the data before anything is written
    prepare_out_dir(out_dir)
    return Loop(task, run.train, out_dir, resume_dir or out_dir / "resume").run()


def _settings(args) -> dict:
    """Flag values of one tagger from params.yaml (`--params FILE --tagger NAME`)."""
    if args.tagger is None:
        raise ConfigError("--params needs --tagger NAME (an entry of secrets.taggers)")
    from align_mamba.secrets.settings import load_secrets

    settings = load_secrets(args.params)
    sections = {"model": settings.tagger_named(args.tagger).model, "train": settings.train, "tagger": settings.tagger}
    values = {
        f"{section}__{key}": value for section, config in sections.items() for key, value in to_dict(config).items()
    }
    return {**values, "name": args.tagger}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.secrets.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="secret-span dataset directory (manifest.json)")
    parser.add_argument("--out", type=Path, required=True, help="output directory of this tagger")
    parser.add_argument(
        *flag_names("resume_dir"),
        dest="resume_dir",
        type=Path,
        help="where resume checkpoints live (default OUT/resume)",
    )
    parser.add_argument("--config", type=Path, help="YAML with model:, train:, tagger: sections; flags override it")
    parser.add_argument("--name", help="the tagger's name in logs and reports (default: the --out folder's name)")
    parser.add_argument("--tagger", help="with --params: the secrets.taggers entry to train")
    parser.add_argument(
        *flag_names("init_from"),
        dest="init_from",
        type=Path,
        help="start from this tagger checkpoint (same model settings; head rows matched by class name)",
    )
    add_dataclass_arguments(parser, SECTIONS)
    args = parse_with_params(parser, argv, _settings)
    setup_logging(args.log)
    tagger_run = TaggerRun(**load_sections(args, SECTIONS))
    with output_lock(args.out):
        train_tagger(tagger_run, args.data, args.out, args.resume_dir, args.name, args.init_from)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
