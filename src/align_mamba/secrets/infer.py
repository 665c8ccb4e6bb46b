"""Chunked inference of the byte tagger over files of any length, and its checkpoint contents.

A file is cut into chunks of `chunk_len` bytes; the model reads each chunk with at least `overlap`
bytes of context on both sides (fewer only where the file ends), and only the chunk's own bytes
are kept. Every window is chunk_len + 2·overlap bytes long, [s - overlap, s + chunk_len + overlap)
shifted inward at the file's two ends (a file no longer than that is one window), so the model never
sees more than that at once, whatever the file length, and all windows of a file batch together
in one shape (edge windows of their own length would run as extra, nearly empty batches).

For the windowed transformer the result equals a full-sequence pass whenever its receptive field
n_layers·window <= overlap; a bidirectional Mamba sees the whole file in a full pass, so chunking
is an approximation there (its state decays, so distant bytes matter little; tests measure how
little).

Spans are decoded in a stream: runs of bytes with p(secret) = 1 - p(none) >= threshold, of at
least `min_len` bytes; a run's format is the argmax of the class probabilities averaged over it,
its score the mean p(secret). Two spans at most BRIDGE_GAP bytes apart whose gap holds only
secret-body bytes (base64, hex, line breaks) are one span (`bridge_spans`): a long PEM body where
the tagger's p(secret) dips for a few bytes is one finding, not a dozen. Only one batch of windows is held; scanning (`predict_spans`) copies
back just the rows that may be secret, so a GPU scan moves bytes in and a few rows out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align_mamba.core.backends import resolve_backend
from align_mamba.core.checkpoint import load_checkpoint, load_weights, require_finite, save_checkpoint
from align_mamba.core.errors import ConfigError, DataIntegrityError
from align_mamba.core.params import from_mapping, to_dict
from align_mamba.secrets.spans import Span
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

CHECKPOINT_FORMAT = "align-mamba-byte-tagger"
WEIGHTS = ("float32", "bfloat16")  # the weight dtypes a loaded tagger can run in (tune_tagger)
INFERENCE_KEYS = ("threshold", "min_span_len", "chunk_len", "overlap")


@dataclass(frozen=True)
class Window:
    """Bytes [start, end) go into the model; bytes [keep_start, keep_end) of its output are kept."""

    start: int
    end: int
    keep_start: int
    keep_end: int


def plan_windows(length: int, chunk_len: int, overlap: int) -> list[Window]:
    """The windows covering a file of `length` bytes (see the module docstring); kept ranges tile [0, length)."""
    if chunk_len < 1 or overlap < 0:
        raise ConfigError(f"chunk_len must be >= 1 and overlap >= 0, got chunk_len={chunk_len}, overlap={overlap}")
    size = chunk_len + 2 * overlap
    if length <= size:  # one window holds the whole file: read it once, not once per chunk
        return [Window(0, length, 0, length)] if length else []
    windows = []
    for keep_start in range(0, length, chunk_len):
        start = max(0, min(keep_start - overlap, length - size))  # shifted inward at the file's ends
        windows.append(Window(start, start + size, keep_start, min(length, keep_start + chunk_len)))
    return windows


def _batches(windows: list[Window], batch_chunks: int) -> Iterator[list[Window]]:
    """Consecutive windows of equal length, at most batch_chunks at a time (no padding needed)."""
    batch: list[Window] = []
    for window in windows:
        if batch and (len(batch) == batch_chunks or window.end - window.start != batch[0].end - batch[0].start):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


# Gated windows are widened to a multiple of this many bytes (more context, inside the file), so the
# many short regions of a file fall into a few input lengths and run as batches, not one by one.
REGION_BUCKET = 256


def _widen(window: Window, length: int, cap: int) -> Window:
    """`window` with its input grown to a multiple of REGION_BUCKET, but to at most `cap` bytes (the
    ungated window) and the file, inside the file; kept range unchanged."""
    size = max(
        window.end - window.start, min(length, cap, -(-(window.end - window.start) // REGION_BUCKET) * REGION_BUCKET)
    )
    start = max(0, min(window.start - (size - (window.end - window.start)) // 2, length - size))
    return Window(start, start + size, window.keep_start, window.keep_end)


def plan_region_windows(regions: Sequence[tuple[int, int]], length: int, chunk_len: int, overlap: int) -> list[Window]:
    """Windows reading only `regions` (sorted, disjoint (start, end) of a `length`-byte file): each region
    is planned as a file of its own (plan_windows), then widened (_widen); kept ranges tile the regions.
    A single region [0, length) gives plan_windows(length, ...) itself (its windows are full-size, or the file)."""
    windows = []
    for start, end in regions:
        for w in plan_windows(end - start, chunk_len, overlap):
            shifted = Window(w.start + start, w.end + start, w.keep_start + start, w.keep_end + start)
            windows.append(_widen(shifted, length, chunk_len + 2 * overlap))
    return windows


def _window_batches(
    model: ByteTagger, data: bytes, device: torch.device, windows: list[Window], batch_chunks: int
) -> Iterator[tuple[list[Window], torch.Tensor]]:
    """(windows, probs) per batch of equal-length windows: probs (b, window length, C) float32 on `device`.

    Windows are grouped by length (stable: plan_windows' equal windows keep file order). The file goes
    to the device once as uint8; windows are cut there, so only bytes cross the bus.
    """
    if batch_chunks < 1:
        raise ConfigError(f"batch_chunks must be >= 1, got {batch_chunks}")
    model.eval()
    file_bytes = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if data else None
    for batch in _batches(sorted(windows, key=lambda w: w.end - w.start), batch_chunks):
        ids = torch.stack([file_bytes[w.start : w.end] for w in batch]).long()  # (b, window length)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(ids)  # (b, window length, C)
        yield batch, logits.float().softmax(-1)


@torch.inference_mode()
def iter_probabilities(
    model: ByteTagger,
    data: bytes,
    device: torch.device,
    chunk_len: int = 32768,
    overlap: int = 1024,
    batch_chunks: int = 8,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (offset, probs) in file order: probs (n, C) float32 class probabilities of bytes offset..offset+n."""
    windows = plan_windows(len(data), chunk_len, overlap)
    for batch, probs in _window_batches(model, data, device, windows, batch_chunks):
        probs = probs.cpu().numpy()
        for row, w in zip(probs, batch):
            yield w.keep_start, row[w.keep_start - w.start : w.keep_end - w.start]


# Candidates are picked on the device a hair below the threshold, then checked on the host with the
# dense path's own arithmetic, so both paths flag exactly the same bytes whatever the device's rounding.
_CANDIDATE_MARGIN = 1e-3


@torch.inference_mode()
def iter_candidates(
    model: ByteTagger,
    data: bytes,
    device: torch.device,
    threshold: float,
    chunk_len: int = 32768,
    overlap: int = 1024,
    batch_chunks: int = 8,
    regions: Sequence[tuple[int, int]] | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield (offset, n, positions, probs) per window, for its kept bytes offset..offset+n: positions (k,)
    int64 file offsets of the bytes whose p(secret) may reach `threshold`, probs (k, C).

    Secrets are a sliver of a file, so only these rows leave the device instead of n × C probabilities.
    regions: read only these (start, end) ranges (gate.candidate_regions), else the whole file; windows
    come grouped by length, so in file order only without regions (predict_spans sorts them).
    """
    if regions is None:
        windows = plan_windows(len(data), chunk_len, overlap)
    else:
        windows = plan_region_windows(regions, len(data), chunk_len, overlap)
    for batch, probs in _window_batches(model, data, device, windows, batch_chunks):
        columns = torch.arange(probs.shape[1], device=probs.device)  # (window length,)
        keep_start = torch.tensor([w.keep_start - w.start for w in batch], device=probs.device)[:, None]
        keep_end = torch.tensor([w.keep_end - w.start for w in batch], device=probs.device)[:, None]
        kept = (columns >= keep_start) & (columns < keep_end)  # (b, window length)
        candidate = kept & (probs[..., 1:].sum(-1) >= threshold - _CANDIDATE_MARGIN)
        rows, cols = (t.cpu().numpy() for t in candidate.nonzero(as_tuple=True))  # row-major: file order
        picked = probs[candidate].cpu().numpy()  # (k, C)
        bounds = np.searchsorted(rows, np.arange(len(batch) + 1))
        for index, w in enumerate(batch):
            a, b = bounds[index], bounds[index + 1]
            yield w.keep_start, w.keep_end - w.keep_start, w.start + cols[a:b].astype(np.int64), picked[a:b]


def predict_bytes(
    model: ByteTagger,
    data: bytes,
    device: torch.device,
    chunk_len: int = 32768,
    overlap: int = 1024,
    batch_chunks: int = 8,
) -> np.ndarray:
    """(len(data), C) float32 class probabilities per byte, computed window by window."""
    out = np.zeros((len(data), model.num_classes), dtype=np.float32)
    for offset, probs in iter_probabilities(model, data, device, chunk_len, overlap, batch_chunks):
        out[offset : offset + len(probs)] = probs
    return out


@dataclass
class _Run:
    """An open run of secret bytes: [start, end), the sum of p(secret) and (C-1,) sums of the format probabilities."""

    start: int
    end: int
    p_sum: float
    class_sums: np.ndarray


class SpanDecoder:
    """Turns per-byte class probabilities, fed in file order, into spans (see the module docstring)."""

    def __init__(self, class_names: Sequence[str], threshold: float = 0.5, min_len: int = 8):
        if not 0 <= threshold <= 1 or min_len < 1:
            raise ConfigError(f"threshold must be in [0, 1] and min_len >= 1, got {threshold}, {min_len}")
        self.class_names, self.threshold, self.min_len = tuple(class_names), threshold, min_len
        self.spans: list[Span] = []
        self._run: _Run | None = None

    def feed(self, offset: int, probs: np.ndarray) -> None:
        """probs: (n, C) probabilities of bytes offset..offset+n, continuing the previous feed."""
        self.feed_rows(offset, len(probs), offset + np.arange(len(probs)), probs)

    def feed_rows(self, offset: int, n: int, positions: np.ndarray, probs: np.ndarray) -> None:
        """Of bytes offset..offset+n (continuing the previous feed), the rows that may be secret:
        positions (k,) increasing file offsets and their (k, C) probabilities; unlisted bytes are none."""
        p_secret = probs[:, 1:].sum(axis=1)  # (k,) = 1 - p(none), but never below 0 by rounding
        hit = p_secret >= self.threshold
        positions, probs, p_secret = positions[hit], probs[hit], p_secret[hit]
        starts = np.flatnonzero(np.diff(positions, prepend=-2) != 1)  # row index where each run begins
        ends = np.append(starts[1:], len(positions))
        p_sums = np.add.reduceat(p_secret.astype(np.float64), starts) if len(starts) else []
        class_sums = np.add.reduceat(probs[:, 1:].astype(np.float64), starts, axis=0) if len(starts) else []
        for a, b, p_sum, class_sum in zip(starts, ends, p_sums, class_sums):
            start, end = int(positions[a]), int(positions[b - 1]) + 1
            if self._run is None or self._run.end != start:  # a run continues only across a block edge
                self._close()
                self._run = _Run(start, start, 0.0, np.zeros(probs.shape[1] - 1))
            self._run.end = end
            self._run.p_sum += float(p_sum)
            self._run.class_sums += class_sum
        if self._run is not None and self._run.end != offset + n:
            self._close()

    def _close(self) -> None:
        run = self._run
        if run is not None and run.end - run.start >= self.min_len:
            name = self.class_names[1 + int(np.argmax(run.class_sums))]
            self.spans.append(Span(run.start, run.end, name, run.p_sum / (run.end - run.start)))
        self._run = None

    def finish(self) -> list[Span]:
        """The spans of everything fed, in order."""
        self._close()
        return self.spans


# What a secret's body is made of: base64 and hex digits and the line breaks of a PEM body. Two
# neighbouring secrets are separated by something else in practice (a quote, a space, "=", ":", ","),
# so a gap of only these bytes is the tagger dipping inside one secret.
BODY_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\r\n")
# A PEM body line is 64 bytes: a dip longer than a line is not bridged
BRIDGE_GAP = 64


def bridge_spans(spans: Sequence[Span], data: bytes, max_gap: int = BRIDGE_GAP) -> list[Span]:
    """Spans (sorted, disjoint) with each two joined whose gap is at most `max_gap` bytes of BODY_BYTES.

    The joined span takes the format of the longer part and the length-weighted mean score of the
    parts (the gap's bytes count for neither). E.g. over b'k="' + b"A" * 20 + b"x+y" + b"B" * 20 + b'"',
    spans [3, 23) and [26, 46) become [3, 46); had the gap been b'" "' they would stay two.
    """
    out: list[Span] = []
    tagged: list[int] = []  # per span of out, its bytes the tagger flagged (gaps excluded)
    for span in spans:
        gap = data[out[-1].end : span.start] if out else None
        if gap is not None and len(gap) <= max_gap and all(b in BODY_BYTES for b in gap):
            last = out[-1]
            score = (last.score * tagged[-1] + span.score * span.length) / (tagged[-1] + span.length)
            name = last.format if tagged[-1] >= span.length else span.format
            out[-1], tagged[-1] = Span(last.start, span.end, name, score), tagged[-1] + span.length
        else:
            out.append(span)
            tagged.append(span.length)
    return out


def decode_spans(
    probs: np.ndarray, threshold: float = 0.5, min_len: int = 8, class_names: Sequence[str] | None = None
) -> list[Span]:
    """Spans of a whole file's (len, C) probabilities; class names default to none, class_1, ..."""
    names = class_names or ["none"] + [f"class_{k}" for k in range(1, probs.shape[1])]
    decoder = SpanDecoder(names, threshold, min_len)
    decoder.feed(0, probs)
    return decoder.finish()


def predict_spans(
    model: ByteTagger,
    data: bytes,
    device: torch.device,
    chunk_len: int = 32768,
    overlap: int = 1024,
    batch_chunks: int = 8,
    threshold: float = 0.5,
    min_len: int = 8,
    regions: Sequence[tuple[int, int]] | None = None,
) -> list[Span]:
    """The secrets the model finds in `data`, formats named by model.class_names; memory bounded by chunk_len.

    regions: read only these sorted, disjoint (start, end) ranges (the scan's candidate gate); bytes
    outside them are "none". None reads the whole file.
    """
    decoder = SpanDecoder(model.class_names, threshold, min_len)
    rows = iter_candidates(model, data, device, threshold, chunk_len, overlap, batch_chunks, regions)
    if regions is not None:  # batched by length: back to file order for the streaming decoder
        rows = sorted(rows, key=lambda row: row[0])
    for offset, n, positions, probs in rows:
        decoder.feed_rows(offset, n, positions, probs)
    return bridge_spans(decoder.finish(), data)


def save_tagger(path: Path, model: ByteTagger, meta: dict[str, Any], state_dict: dict | None = None) -> None:
    """Write a tagger checkpoint: config, class names, fp32 CPU weights (default: the model's) and meta.

    meta must hold the inference settings INFERENCE_KEYS (threshold, min_span_len, chunk_len,
    overlap); it should say what trained the weights (train_backend, train_device, ...).
    """
    missing = [key for key in INFERENCE_KEYS if key not in meta]
    if missing:
        raise ConfigError(f"tagger checkpoint meta lacks {', '.join(missing)}")
    weights = model.state_dict() if state_dict is None else state_dict
    weights = {k: v.detach().to("cpu", torch.float32) for k, v in weights.items()}
    require_finite(weights, f"tagger {path}")
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "tagger_config": to_dict(model.config),
            "class_names": list(model.class_names),
            "state_dict": weights,
            "meta": meta,
        },
    )


def tune_tagger(model: ByteTagger, weights: str = "float32", ssd_chunk_size: int | None = None) -> str:
    """Inference settings that change speed, not the function computed (up to rounding), applied in place.

    weights "bfloat16" casts the model to bf16 (default: fp32 weights, bf16 autocast on cuda);
    ssd_chunk_size sets the block length of every Mamba-2 mixer's chunked scan, which splits the
    kernels' work differently but computes the same SSD (on the CPU it also turns the linear-time scan
    of select_inference_path back into the chunked form, so the two can be timed). Returns a label of what was set ("" if nothing).
    """
    if weights not in WEIGHTS:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if ssd_chunk_size is not None and ssd_chunk_size < 1:
        raise ConfigError(f"ssd_chunk_size must be >= 1, got {ssd_chunk_size}")
    labels = []
    if ssd_chunk_size is not None:
        # Mamba-2 mixers, reference or mamba_ssm.Mamba2: A_log and a chunk_size (Mamba-1 has none)
        mixers = [m for m in model.modules() if hasattr(m, "A_log") and hasattr(m, "chunk_size")]
        if not mixers:
            raise ConfigError("ssd_chunk_size: this tagger has no Mamba-2 mixer")
        for mixer in mixers:
            mixer.chunk_size = ssd_chunk_size
            if getattr(mixer, "scan_block", None) is not None:  # asked for the chunked form: leave the scan
                mixer.scan_block = None
        labels.append(f"ssd chunk {ssd_chunk_size}")
    if weights == "bfloat16":
        model.to(torch.bfloat16)
        labels.append("bf16 weights")
    return ", ".join(labels)


# Steps per block of the CPU inference path's SSD scan (mixers.ssd_scan.ssd_scan): 16 and 32 time about the
# same on a 2-core CPU; shorter blocks mean less quadratic work per block, longer fewer Python steps.
CPU_SCAN_BLOCK = 16


# Intra-op threads of a gated CPU scan. Its forwards are small (a few regions of <= 1 KB), so each op
# lasts tens of microseconds: a second thread gains 1.2-1.7x on an idle 2-core machine, but when another
# process holds one core every op waits at OpenMP's barrier for a descheduled thread, 12-26x slower
# (results/probes/scan_speed). One thread never waits.
GATED_CPU_THREADS = 1


def scan_threads(asked: int | None, gated: bool, device: torch.device) -> int | None:
    """Intra-op threads for a scan: as asked, else GATED_CPU_THREADS for a gated CPU scan, else torch's
    default (None)."""
    if asked is not None:
        return asked
    return GATED_CPU_THREADS if gated and device.type == "cpu" else None


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: as they are), then put the old count back."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def select_inference_path(model: ByteTagger, device: torch.device) -> str:
    """Pick how the Mamba-2 mixers compute the SSD, in place, and name it.

    On the CPU with the reference mixers: the linear-time scan (mixers.ssd_scan.ssd_scan), because the
    chunked form's (chunks x chunks) state passing costs more than the whole rest of the model on a
    file-sized window. Elsewhere (mamba-ssm's kernels, or a GPU) nothing changes. Same function either
    way, up to float rounding.
    """
    mixers = [m for m in model.modules() if hasattr(m, "scan_block")]  # Mamba2Reference only
    if device.type != "cpu" or not mixers:
        return "chunked SSD" if mixers else model.backend
    for mixer in mixers:
        mixer.scan_block = CPU_SCAN_BLOCK
    return f"cpu scan (SSD recurrence, blocks of {CPU_SCAN_BLOCK})"


def warm_start(model: ByteTagger, path: Path) -> dict[str, Any]:
    """Copy a saved tagger's weights into `model` (same TaggerConfig up to chunk_size) before training continues.

    The output head is matched by class name: a class the file knows keeps its row of head.weight
    and head.bias, a class it does not know (a format the new data adds) keeps `model`'s fresh
    initialisation, and a class only the file knows is dropped. Every other tensor is copied as is.
    Returns what the training summary records: {"path", "sha256", "best_step", "classes_new"}.
    A corrupt file, or one of another architecture, is one line naming it.
    """
    payload = load_checkpoint(path, "byte-tagger checkpoint", legacy=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise DataIntegrityError(f"{path} is not a byte-tagger checkpoint (format {payload.get('format')!r})")
    saved_config, config = payload["tagger_config"], to_dict(model.config)
    # chunk_size only sets how the SSD is computed (one chunked form or another), not what it computes
    differ = sorted(key for key in config if key != "chunk_size" and saved_config.get(key) != config[key])
    if differ:
        shown = ", ".join(f"{key} {saved_config.get(key)!r} there, {config[key]!r} here" for key in differ)
        raise ConfigError(f"--init-from {path}: another model configuration ({shown})")
    old_names, weights = list(payload["class_names"]), dict(payload["state_dict"])
    head = {name: model.state_dict()[name].clone() for name in ("head.weight", "head.bias")}
    for row, name in enumerate(model.class_names):
        if name in old_names:
            for key in head:
                head[key][row] = weights[key][old_names.index(name)]
    load_weights(model, {**weights, **head}, path)
    return {
        "path": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "best_step": payload["meta"].get("best_step"),
        "classes_new": [name for name in model.class_names if name not in old_names],
    }


def load_tagger(path: Path, device: torch.device, backend: str = "auto") -> tuple[ByteTagger, dict[str, Any]]:
    """Rebuild a saved tagger on `backend` (auto | kernels | reference) and `device`, in eval mode.

    Returns (model, meta): meta is the saved one plus class_names, backend/device now running it,
    and inference_path (select_inference_path: on the CPU, the linear-time SSD scan).
    A missing, corrupt (checksum), foreign or mismatched file is one DataIntegrityError line naming it.
    """
    payload = load_checkpoint(path, "byte-tagger checkpoint")
    try:
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise KeyError("format")
        config = from_mapping(TaggerConfig, payload["tagger_config"], "tagger_config")
        class_names, state_dict, meta = payload["class_names"], payload["state_dict"], payload["meta"]
        model = ByteTagger(config, resolve_backend(backend, device, config.mixer), len(class_names), class_names)
    except (ConfigError, KeyError, TypeError, AttributeError) as err:
        raise DataIntegrityError(f"{path} is not a byte-tagger checkpoint ({type(err).__name__}: {err})") from None
    resolved = model.backend
    load_weights(model, state_dict, path)
    path_name = select_inference_path(model, device)
    return model.to(device).eval(), {
        **meta,
        "class_names": list(class_names),
        "backend": resolved,
        "device": str(device),
        "inference_path": path_name,
    }
