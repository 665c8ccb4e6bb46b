"""Secret-span datasets on disk: raw files, labels.jsonl and a byte mask per split, one sha256 manifest.

Layout of a dataset directory::

    manifest.json              generator "secrets", params, formats, decoy_kinds, splits, files
    <split>/files/NNNN_<name>  the raw bytes of each file
    <split>/labels.jsonl       one LabelledFile per line, in file order (hard-case spans under "cases")
    <split>/mask.npy           uint8, 1 on secret bytes, all files of the split concatenated in that order

The whole directory is staged next to the target and renamed into place when complete, so a
reader never sees half a dataset; loading checks every byte against the manifest's sha256.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from align_mamba.secrets.data.config import SECRET_SPLITS, SecretDataConfig, check_split
from align_mamba.secrets.data.decoys import DECOY_KINDS
from align_mamba.secrets.data.formats import FORMAT_NAMES
from align_mamba.secrets.data.generate import GENERATION_ORDER, SeenValues, generate_split
from align_mamba.core.storage import (MANIFEST_NAME, check_replaceable, move_into_place,
                                      read_sealed_manifest, sealed_manifest_bytes, sibling,
                                      verified_bytes, write_file)
from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.secrets.spans import LabelledFile, Span, spans_to_mask

GENERATOR = "secrets"


def _span_dicts(spans: tuple[Span, ...]) -> list[dict]:
    return [{"start": s.start, "end": s.end, "format": s.format} for s in spans]


def _label_line(lf: LabelledFile) -> str:
    return json.dumps({"relpath": lf.relpath, "kind": lf.kind, "length": lf.length, "spans": _span_dicts(lf.spans),
                       "decoys": _span_dicts(lf.decoys), "target_decile": lf.target_decile,
                       "length_bucket": lf.length_bucket, "cases": _span_dicts(lf.cases)})


def _parse_label(line: str, where: str) -> LabelledFile:
    try:
        row = json.loads(line)
        return LabelledFile(
            relpath=row["relpath"], kind=row["kind"], length=int(row["length"]),
            spans=tuple(Span(s["start"], s["end"], s["format"]) for s in row["spans"]),
            decoys=tuple(Span(s["start"], s["end"], s["format"]) for s in row["decoys"]),
            target_decile=row["target_decile"], length_bucket=int(row["length_bucket"]),
            # datasets written before hard cases have no "cases"
            cases=tuple(Span(s["start"], s["end"], s["format"]) for s in row.get("cases", ())))
    except (ValueError, KeyError, TypeError) as err:
        raise DataIntegrityError(f"{where}: malformed label ({err})") from None


def _write_split(root: Path, split: str, config: SecretDataConfig, seen: SeenValues) -> tuple[dict, dict]:
    """Write one split under root; returns ({relative path: {sha256, bytes}}, its splits entry)."""
    files: dict[str, dict] = {}
    labels: list[LabelledFile] = []
    for lf, data in generate_split(config, split, seen):
        relative = f"{split}/{lf.relpath}"
        files[relative] = {"sha256": write_file(root / relative, lambda sink, d=data: sink.write(d)),
                           "bytes": len(data)}
        labels.append(lf)
    text = "".join(_label_line(lf) + "\n" for lf in labels).encode("utf-8")
    files[f"{split}/labels.jsonl"] = {"sha256": write_file(root / split / "labels.jsonl", lambda s: s.write(text)),
                                      "bytes": len(text)}
    # A split with no files still gets its (empty) labels and mask.
    masks = [spans_to_mask(lf.length, lf.spans) for lf in labels]
    mask = np.concatenate(masks) if masks else np.zeros(0, dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, mask, allow_pickle=False)
    blob = buffer.getvalue()
    files[f"{split}/mask.npy"] = {"sha256": write_file(root / split / "mask.npy", lambda s: s.write(blob)),
                                  "bytes": len(blob)}
    summary = {"files": len(labels), "bytes": int(mask.size), "spans": sum(len(lf.spans) for lf in labels),
               "hard_spans": sum(len(lf.cases) for lf in labels)}
    return files, summary


def write_secret_dataset(config: SecretDataConfig, out_dir: str | os.PathLike) -> Path:
    """Generate every split of `config` into `out_dir` (replacing a dataset there); returns its path."""
    if not isinstance(config, SecretDataConfig):
        raise ConfigError(f"config must be a SecretDataConfig, got {type(config).__name__}")
    out_dir = Path(os.path.abspath(out_dir))
    check_replaceable(out_dir, GENERATOR)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = sibling(out_dir, "tmp")
    try:
        seen = SeenValues()
        files: dict[str, dict] = {}
        splits: dict[str, dict] = {}
        for split in GENERATION_ORDER:
            split_files, splits[split] = _write_split(staged, split, config, seen)
            files.update(split_files)
        manifest = {
            "generator": GENERATOR,
            "params": config.to_dict(),
            "formats": {"all": list(FORMAT_NAMES), "train": list(config.train_formats),
                        "heldout": sorted(config.heldout_formats)},
            "decoy_kinds": list(DECOY_KINDS),
            "splits": {split: splits[split] for split in SECRET_SPLITS},
            "files": files,
        }
        blob = sealed_manifest_bytes(manifest)
        write_file(staged / MANIFEST_NAME, lambda sink: sink.write(blob))
        move_into_place(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out_dir


def _parse_manifest(path: Path) -> dict:
    manifest = read_sealed_manifest(path)
    if manifest.get("generator") != GENERATOR:
        raise DataIntegrityError(f"{path}: not a secret-span dataset manifest")
    return manifest


@functools.lru_cache(maxsize=8)
def _cached_manifest(path: Path, stamp: tuple[int, int, int]) -> dict:
    return _parse_manifest(path)


def _manifest(dataset_dir: Path) -> dict:
    """The manifest, parsed once per version of the file: read_file_bytes runs once per file."""
    path = Path(os.path.abspath(dataset_dir / MANIFEST_NAME))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataIntegrityError(f"{path}: manifest not found; generate the dataset first") from None
    return _cached_manifest(path, (info.st_ino, info.st_mtime_ns, info.st_size))


def read_secret_manifest(dataset_dir: str | os.PathLike) -> dict:
    """The parsed manifest.json; DataIntegrityError if missing, unreadable or not a secrets manifest."""
    return _parse_manifest(Path(dataset_dir) / MANIFEST_NAME)


def load_secret_split(dataset_dir: str | os.PathLike, split: str) -> list[LabelledFile]:
    """The labels of every file of `split`, after checking labels, mask and each file against the manifest."""
    check_split(split)
    dataset_dir = Path(dataset_dir)
    manifest = _manifest(dataset_dir)
    where = f"{dataset_dir}/{split}/labels.jsonl"
    text = verified_bytes(dataset_dir, manifest, f"{split}/labels.jsonl").decode("utf-8")
    labels = [_parse_label(line, where) for line in text.splitlines() if line]
    verified_bytes(dataset_dir, manifest, f"{split}/mask.npy")
    for lf in labels:
        data = verified_bytes(dataset_dir, manifest, f"{split}/{lf.relpath}")
        if len(data) != lf.length:
            raise DataIntegrityError(f"{dataset_dir}/{split}/{lf.relpath}: {len(data)} bytes, labels say {lf.length}")
    return labels


def read_file_bytes(dataset_dir: str | os.PathLike, split: str, labelled_file: LabelledFile) -> bytes:
    """The raw bytes of one file of `split`, checked against the manifest's sha256."""
    check_split(split)
    dataset_dir = Path(dataset_dir)
    return verified_bytes(dataset_dir, _manifest(dataset_dir), f"{split}/{labelled_file.relpath}")


def load_split_mask(dataset_dir: str | os.PathLike, split: str) -> np.ndarray:
    """(total bytes of the split,) uint8 mask, 1 on secret bytes, files concatenated in labels.jsonl order."""
    check_split(split)
    dataset_dir = Path(dataset_dir)
    data = verified_bytes(dataset_dir, _manifest(dataset_dir), f"{split}/mask.npy")
    return np.load(io.BytesIO(data), allow_pickle=False)
