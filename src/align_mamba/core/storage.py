"""Dataset directories shared by every generator: hashed writes, staged atomic replacement, verified reads.

A dataset is a directory with a ``manifest.json`` naming its generator and the sha256 of every file,
sealed by the sha256 of its own contents (``manifest_sha256``), checked on every read.
It is written in a hidden sibling and renamed into place, so readers never see half of one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from align_mamba.core.errors import ConfigError, DataIntegrityError

MANIFEST_NAME = "manifest.json"


class HashingWriter:
    """File-like sink that hashes what np.save writes, so no second in-memory copy is needed."""

    def __init__(self, handle) -> None:
        self.handle, self.sha256 = handle, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.handle.write(data)


def write_file(path: Path, write: Callable[[HashingWriter], None]) -> str:
    """Create ``path``, fill it with ``write`` and return the sha256 of its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        sink = HashingWriter(handle)
        write(sink)
        handle.flush()
        # The directory rename is only atomic if the files under it are durable first.
        os.fsync(handle.fileno())
    return sink.sha256.hexdigest()


def json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode("utf-8")


# The manifest's own checksum: the files' sha256s protect the data, this protects what the manifest
# says about it (one flipped bit turned num_pairs 4 into 5, or the seed, and the dataset still loaded).
SEAL_KEY = "manifest_sha256"


def sealed_manifest_bytes(manifest: dict) -> bytes:
    """`manifest` as byte-stable JSON with SEAL_KEY: the sha256 of the same JSON without it."""
    return json_bytes({**manifest, SEAL_KEY: hashlib.sha256(json_bytes(manifest)).hexdigest()})


def read_sealed_manifest(path: Path) -> dict:
    """The manifest at `path` (a JSON object) without its seal, after checking the seal.

    DataIntegrityError, one line naming the file: missing, unreadable, not an object, no seal (written
    before manifests were sealed) or a seal that does not match its contents.
    """
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataIntegrityError(f"{path}: manifest not found; generate the dataset first") from None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataIntegrityError(
            f"{path}: unreadable manifest ({' '.join(str(err).split())}); regenerate the dataset"
        ) from None
    if not isinstance(manifest, dict):
        raise DataIntegrityError(f"{path}: not a dataset manifest (a JSON object); regenerate the dataset")
    seal = manifest.pop(SEAL_KEY, None)
    if seal is None:
        raise DataIntegrityError(
            f"{path}: manifest has no {SEAL_KEY} (written by an older version or damaged); regenerate the dataset"
        )
    if seal != hashlib.sha256(json_bytes(manifest)).hexdigest():
        raise DataIntegrityError(
            f"{path}: manifest contents do not match its {SEAL_KEY} (the file is damaged); regenerate the dataset"
        )
    return manifest


def sibling(out_dir: Path, tag: str) -> Path:
    """Create and return a fresh hidden directory next to ``out_dir`` (same filesystem, so rename works)."""
    while True:
        candidate = out_dir.parent / f".{out_dir.name}.{tag}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def is_dataset(path: Path, generator: str) -> bool:
    """True when `path` holds a manifest written by `generator` (mqar, secrets)."""
    try:
        return json.loads((path / MANIFEST_NAME).read_text()).get("generator") == generator
    except (OSError, ValueError, AttributeError):
        return False


def remove_stale_siblings(out_dir: Path) -> None:
    """Delete the hidden staging/old siblings a killed writer of `out_dir` left behind.

    Only while this process holds out_dir's output lock (align_mamba.core.lock): then no other writer
    can be staging beside it. Without the lock (a library call) nothing is removed.
    """
    from align_mamba.core.lock import holds_lock

    if not holds_lock(out_dir):
        return
    for tag in ("tmp", "old"):
        for stale in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.{tag}-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)


def check_replaceable(out_dir: Path, generator: str) -> None:
    """Replacing is a recursive delete: refuse anything that is not a `generator` dataset (or empty).

    Also clears what a killed earlier writer left beside it (see remove_stale_siblings).
    """
    remove_stale_siblings(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"out: {out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not is_dataset(out_dir, generator):
        raise ConfigError(
            f"out: {out_dir} is a non-empty directory without a {generator} dataset manifest; refusing to replace it"
        )


def move_into_place(staged: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        staged.rename(out_dir)
        return
    old = sibling(out_dir, "old")
    old.rmdir()
    out_dir.rename(old)
    try:
        staged.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def verified_bytes(data_dir: Path, manifest: dict, relative: str) -> bytes:
    """The bytes of one dataset file after checking them against the manifest's sha256."""
    path = data_dir / relative
    entry = manifest.get("files", {}).get(relative)
    if entry is None:
        raise DataIntegrityError(f"{path}: not listed in {MANIFEST_NAME}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataIntegrityError(f"{path}: file missing; regenerate the dataset") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise DataIntegrityError(
            f"{path}: sha256 {digest} does not match the manifest's {entry.get('sha256')}; regenerate the dataset"
        )
    return data
