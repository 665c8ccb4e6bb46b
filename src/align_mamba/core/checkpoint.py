"""Checkpoints of every kind (MQAR models, taggers, resume points): written atomically, checksummed,
verified on every load, and never holding a non-finite weight.

A checkpoint is a dict saved with torch.save and read back with weights_only=True. Its "sha256" key
is the digest of everything else in it, walked in a fixed order (every tensor's name, dtype, shape
and bytes; every other value's repr), so one flipped bit in a weight, an optimizer moment or a
setting is caught when the file is read; a bit flip torch.load cannot parse is caught there.
Checkpoints written before checksums existed have no such key: they load, with a warning naming
the file, and `python -m align_mamba.core.checkpoint stamp FILE...` adds the checksum to them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import pickle
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from align_mamba.core.atomic import atomic_write_bytes
from align_mamba.core.errors import DataIntegrityError, NonFiniteLossError, run_cli

log = logging.getLogger(__name__)

CHECKSUM_KEY = "sha256"
# What torch.load raises on a truncated, bit-flipped or foreign file (zip, pickle, unpickler errors).
_UNREADABLE = (
    RuntimeError,
    pickle.UnpicklingError,
    EOFError,
    zipfile.BadZipFile,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OSError,
)


def _leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every leaf of nested dicts/lists/tuples, dict keys in sorted order."""
    if isinstance(obj, Mapping):
        for key in sorted(obj, key=repr):
            yield from _leaves(obj[key], f"{prefix}/{key!r}")
    elif isinstance(obj, (list, tuple)):  # a tuple may come back as a list: hash both alike
        for index, item in enumerate(obj):
            yield from _leaves(item, f"{prefix}/{index}")
    else:
        yield prefix, obj


def payload_digest(payload: Mapping[str, Any]) -> str:
    """sha256 over every entry of `payload` except its own checksum (see the module docstring)."""
    digest = hashlib.sha256()
    for path, value in _leaves({k: v for k, v in payload.items() if k != CHECKSUM_KEY}):
        digest.update(path.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"={tensor.dtype}{tuple(value.shape)}:".encode())
            digest.update(memoryview(tensor.view(torch.uint8).numpy()))
        else:
            digest.update(f"={value!r};".encode())
    return digest.hexdigest()


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or ±inf (one device sync for all of them)."""
    names = [name for name, t in tensors.items() if torch.is_tensor(t) and t.is_floating_point() and t.numel()]
    if not names:
        return []
    finite = torch.stack([tensors[name].isfinite().all().to("cpu") for name in names]).tolist()
    return [name for name, ok in zip(names, finite) if not ok]


def require_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """NonFiniteLossError naming `what` and the first bad tensors unless every weight is finite."""
    bad = non_finite(tensors)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteLossError(f"{what}: non-finite weights in {', '.join(bad[:3])}{more}; nothing written")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` plus its checksum to `path`, atomically (a kill leaves the old file or none)."""
    stamped = {**payload, CHECKSUM_KEY: payload_digest(payload)}
    buffer = io.BytesIO()
    torch.save(stamped, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, what: str = "checkpoint", legacy: bool = True) -> dict[str, Any]:
    """The verified payload at `path` (checksum key removed); DataIntegrityError in one line naming the
    file if it is missing, unreadable, not a checkpoint dict, or its checksum does not match.

    legacy: whether a file without a checksum loads (with a warning) or is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataIntegrityError(f"{what} not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as err:
        detail = " ".join(str(err).split())[:200]
        raise DataIntegrityError(f"{path} is not {_a(what)} ({type(err).__name__}: {detail})") from None
    if not isinstance(payload, dict):
        raise DataIntegrityError(f"{path} is not {_a(what)} (it holds a {type(payload).__name__})")
    saved = payload.pop(CHECKSUM_KEY, None)
    if saved is None and not legacy:
        raise DataIntegrityError(f"{path} carries no checksum")
    if saved is None:
        log.warning(
            "%s has no checksum (written before checkpoints carried one); loading it unverified. "
            "`python -m align_mamba.core.checkpoint stamp %s` adds one",
            path,
            path,
        )
    elif saved != payload_digest(payload):
        raise DataIntegrityError(
            f"{path}: checksum mismatch, the file changed after it was written "
            f"(corrupted or edited); restore or retrain it"
        )
    return payload


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load `state_dict` into `model` strictly; a config/weights mismatch or a non-finite weight is one
    DataIntegrityError line naming the file and the first differing tensor."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    resized = [
        name for name, t in expected.items() if name in state_dict and tuple(state_dict[name].shape) != tuple(t.shape)
    ]
    if missing or unexpected or resized:
        if resized:
            name = resized[0]
            first = (
                f"{name} is {tuple(state_dict[name].shape)} in the file, {tuple(expected[name].shape)} for the config"
            )
        else:
            first = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(resized)} of another shape"
        raise DataIntegrityError(
            f"{path}: its weights do not fit the model its config describes ({counts}; e.g. {first})"
        )
    bad = non_finite(state_dict)
    if bad:
        raise DataIntegrityError(f"{path}: non-finite weights in {', '.join(bad[:3])}; the checkpoint is unusable")
    model.load_state_dict(state_dict)


def set_aside(path: Path, reason: str) -> Path:
    """Rename `path` to a sibling `<name>.<reason>-<time>` so it is kept for a look but never read again."""
    target = path.with_name(f"{path.name}.{reason}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    return target


def load_resume(path: Path, fingerprint: dict, name: str) -> dict[str, Any] | None:
    """The resume point at `path` if it is intact and was written for `fingerprint`, else None.

    A corrupt one (truncated, checksum mismatch, unreadable) or a foreign one (other settings or
    data) is moved aside with a warning, so the run starts afresh instead of failing on every rerun.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = load_checkpoint(path, "resume checkpoint", legacy=False)
    except DataIntegrityError as err:
        moved = set_aside(path, "corrupt")
        log.warning("%s: %s; moved it to %s and starting afresh", name, err, moved.name)
        return None
    if saved.get("fingerprint") != fingerprint:
        moved = set_aside(path, "foreign")
        log.warning(
            "%s: %s was written for other parameters or data; moved it to %s and starting afresh",
            name,
            path,
            moved.name,
        )
        return None
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m align_mamba.core.checkpoint",
        description="Add a checksum to checkpoints written before they carried one.",
    )
    parser.add_argument("command", choices=["stamp"])
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    for path in args.files:
        payload = load_checkpoint(path)
        require_finite(payload.get("state_dict", {}), str(path))
        save_checkpoint(path, payload)
        print(f"{path}: checksum {payload_digest(payload)[:16]}…")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
