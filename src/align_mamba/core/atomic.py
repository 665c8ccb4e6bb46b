"""Atomic file writes: a reader, or a kill -9 mid-write, never sees a partial file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from align_mamba.core.errors import DataIntegrityError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary sibling, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make shared results unreadable
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _non_finite_key(obj: Any, where: str = "") -> str | None:
    """The path of the first NaN/±inf float in nested dicts and lists, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top level)"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite_key(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def null_non_finite(obj: Any) -> Any:
    """`obj` with every NaN/±inf float replaced by None: for values where "not measured" is an answer."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: null_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [null_non_finite(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Byte-stable JSON (sorted keys, fixed indent) so unchanged results hash the same for DVC.

    NaN and ±inf have no JSON spelling (Python would write the invalid literals NaN/Infinity):
    such a value is refused with one DataIntegrityError line naming the file and the key.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        raise DataIntegrityError(
            f"{path}: refusing to write the non-finite value at {_non_finite_key(obj)} (JSON has no NaN or Infinity)"
        ) from None
    atomic_write_text(path, text + "\n")
