"""MQAR datasets on disk: one ``.npy`` per array plus a byte-stable ``manifest.json``, written atomically.

Layout of a dataset directory::

    manifest.json
    {split}/{layout}/{array}.npy      split in train, validation, test; arrays per LAYOUT_ARRAYS
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.core.storage import (
    MANIFEST_NAME,
    check_replaceable,
    move_into_place,
    read_sealed_manifest,
    sealed_manifest_bytes,
    sibling,
    verified_bytes,
    write_file,
)
from align_mamba.recall.mqar import (
    IGNORE_INDEX,
    LAYOUT_ARRAYS,
    LAYOUTS,
    SPLITS,
    VALUE_RANGE,
    VOCAB_SIZE,
    MQARConfig,
    SplitArrays,
    generate_mqar,
    token_spec,
)

if TYPE_CHECKING:
    import torch

GENERATOR = "mqar"
FORMAT_VERSION = 1


PER_EXAMPLE = ("inputs", "labels", "enc_inputs", "query_slot", "query_distance")


@dataclass(frozen=True)
class MQARSplit:
    """One split in one layout; n examples, M queries.

    inputs, labels: (n, L) for the decoder layout; (n, M+1) decoder input and labels for seq2seq.
    enc_inputs: (n, 3N+2) for seq2seq, None for the decoder layout.
    These token arrays keep the dtype they were stored in (int16: a quarter of int64's memory, so
    large training sets fit); `batch` gives int64 on the device. query_slot, query_distance: (n, M)
    int64, in query order (see ``generate_mqar``). vocab_size, num_values: the dataset's token
    space (from its manifest), which the model's embedding and chance loss follow.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    enc_inputs: torch.Tensor | None
    query_slot: torch.Tensor
    query_distance: torch.Tensor
    num_pairs: int
    layout: str
    vocab_size: int = VOCAB_SIZE
    num_values: int = len(VALUE_RANGE)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def head(self, n: int) -> MQARSplit:
        """The first `n` examples (all of them if there are fewer)."""
        return dataclasses.replace(
            self, **{name: getattr(self, name)[:n] for name in PER_EXAMPLE if getattr(self, name) is not None}
        )

    def batch(
        self, idx: torch.Tensor | slice, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(inputs, labels, context) of the examples `idx` as int64 on `device` (converted there, so
        only the stored dtype crosses the bus); context is None for the decoder layout. The copies
        are non-blocking: the host does not wait for the device's queue to drain before it continues."""

        def take(tokens):
            return None if tokens is None else tokens[idx].to(device, non_blocking=True).long()

        return take(self.inputs), take(self.labels), take(self.enc_inputs)

    def query_batch(
        self, idx: torch.Tensor | slice, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | slice, torch.Tensor, torch.Tensor | None]:
        """(inputs, queries, targets, context) of the examples `idx`, for RecallModel.forward.

        queries: slice(1, None) in the seq2seq layout (every decoder position after BOS is a query);
        in the decoder layout the (B, M) int64 positions of each row's queries, found from the
        stored labels on the host (every row holds exactly M). targets: (B·M,) int64 values in the
        same order. Nothing here reads a device value, so a training step stays free of host syncs.
        """
        labels = self.labels[idx]
        if self.layout == "seq2seq":
            queries: torch.Tensor | slice = slice(1, None)
            targets = labels[:, 1:]
        else:
            n, m = labels.shape[0], self.query_slot.shape[1]
            queries = (labels != IGNORE_INDEX).nonzero()[:, 1].view(n, m)
            targets = labels.gather(1, queries)
            queries = queries.to(device, non_blocking=True)
        inputs, _, context = self.batch(idx, device)
        return inputs, queries, targets.reshape(-1).to(device, non_blocking=True).long(), context


def _write_arrays(root: Path, splits: Iterable[SplitArrays]) -> dict[str, dict]:
    """Write every array under ``root``; returns {relative path: {sha256, shape, dtype}} (the manifest's files)."""
    files = {}
    for split in splits:
        for arrays in split.layouts:
            for name, array in arrays.named().items():
                relative = f"{split.split}/{arrays.layout}/{name}.npy"
                array = np.ascontiguousarray(array)
                digest = write_file(root / relative, lambda sink, a=array: np.save(sink, a, allow_pickle=False))
                files[relative] = {"sha256": digest, "shape": list(array.shape), "dtype": str(array.dtype)}
    return files


def _manifest(config: MQARConfig, files: dict[str, dict]) -> dict:
    return {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "tokens": token_spec(config.num_keys),
        "splits": {split: {"num_examples": config.split_size(split)} for split in SPLITS},
        "files": files,
    }


def write_mqar(config: MQARConfig, out_dir: str | os.PathLike) -> Path:
    """Generate every split and layout of ``config`` and write them to ``out_dir``; returns its path.

    Everything is built in a hidden sibling directory and renamed into place once complete, so a
    reader never sees a half-written dataset; an existing dataset at ``out_dir`` is replaced.
    """
    if not isinstance(config, MQARConfig):
        raise ConfigError(f"config must be an MQARConfig, got {type(config).__name__}")
    # abspath gives "." and "x/.." a real name and parent for the sibling directories.
    out_dir = Path(os.path.abspath(out_dir))
    check_replaceable(out_dir, GENERATOR)
    splits = generate_mqar(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = sibling(out_dir, "tmp")
    try:
        files = _write_arrays(staged, splits.values())
        manifest = sealed_manifest_bytes(_manifest(config, files))
        write_file(staged / MANIFEST_NAME, lambda sink: sink.write(manifest))
        move_into_place(staged, out_dir)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return out_dir


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The parsed ``manifest.json`` of a dataset; DataIntegrityError if missing or not an MQAR manifest."""
    path = Path(data_dir) / MANIFEST_NAME
    manifest = read_sealed_manifest(path)
    if manifest.get("generator") != GENERATOR:
        raise DataIntegrityError(f"{path}: not an MQAR manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataIntegrityError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}; regenerate the dataset"
        )
    return manifest


def _load_verified(data_dir: Path, manifest: dict, relative: str) -> np.ndarray:
    """Load one array after checking its bytes against the manifest's sha256."""
    return np.load(io.BytesIO(verified_bytes(data_dir, manifest, relative)), allow_pickle=False)


def load_mqar(data_dir: str | os.PathLike, split: str, layout: str) -> MQARSplit:
    """Load ``split`` in ``layout`` from a dataset written by ``write_mqar``, verifying every file."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    written = manifest["config"]["layouts"]
    if layout not in written:
        raise ConfigError(f"layout: {layout!r} was not written to {data_dir} (it holds {', '.join(written)})")
    # torch is needed only here; importing it lazily keeps the generator CLI quick to start.
    import torch

    arrays = {
        name: torch.from_numpy(_load_verified(data_dir, manifest, f"{split}/{layout}/{name}.npy"))
        for name in LAYOUT_ARRAYS[layout]
    }
    decoder = layout == "decoder"
    return MQARSplit(
        inputs=arrays["inputs" if decoder else "dec_inputs"],
        labels=arrays["labels" if decoder else "dec_labels"],
        enc_inputs=None if decoder else arrays["enc_inputs"],
        query_slot=arrays["query_slot"].long(),
        query_distance=arrays["query_distance"].long(),
        num_pairs=int(manifest["config"]["num_pairs"]),
        layout=layout,
        vocab_size=int(manifest["tokens"]["vocab_size"]),
        num_values=int(manifest["tokens"]["value_range"][1] - manifest["tokens"]["value_range"][0]),
    )
