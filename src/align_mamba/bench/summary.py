"""Numbers drawn from the benchmark's rows: crossover lengths, wrapper tax, provenance (summary.json)."""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from align_mamba.core.backends import optional_module
from align_mamba.core.params import to_dict

# align_mamba's layer -> the bare mamba-ssm / SDPA layer it is compared with
WRAPPER_PAIRS = {"mamba2": "raw_mamba2", "mamba1": "raw_mamba1", "attention": "raw_attention"}
PACKAGES = ("torch", "triton", "mamba_ssm", "causal_conv1d")


@dataclass(frozen=True)
class Crossover:
    """Where Mamba-2's tokens/s first exceeds attention's as L grows.

    length: interpolated in log-log between the bracketing lengths (None when not bracketed);
    lower: the longest length before it with attention at least as fast (None: Mamba-2 already
    faster at the shortest); upper: the first length where Mamba-2 is faster (None: never).
    """

    length: float | None
    lower: int | None
    upper: int | None


def crossover(lengths: Sequence[int], mamba: Sequence[float], attention: Sequence[float]) -> Crossover:
    """The first L (ascending lengths) where mamba tokens/s > attention's; non-finite points are ignored.

    Between the bracketing lengths L0 < L1, d(L) = log(mamba/attention) is taken linear in log L,
    and the crossover is where it reaches 0.
    """
    points = [
        (int(n), math.log(m / a))
        for n, m, a in zip(lengths, mamba, attention)
        if math.isfinite(m) and math.isfinite(a) and m > 0 and a > 0
    ]
    previous = None
    for length, gap in points:
        if gap > 0:
            if previous is None:
                return Crossover(None, None, length)
            lower, lower_gap = previous
            t = -lower_gap / (gap - lower_gap)
            return Crossover(math.exp(math.log(lower) + t * (math.log(length) - math.log(lower))), lower, length)
        previous = (length, gap)
    return Crossover(None, previous[0] if previous else None, None)


def _ok(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[(rows["name"] == name) & (rows["status"] == "ok") & (rows["kind"] != "architecture")]


def crossovers(rows: pd.DataFrame, mamba: str = "mamba2", attention: str = "attention") -> dict:
    """{mode: {d_state: Crossover as dict}} of the mamba layer against attention, per mode and d_state."""
    result: dict = {}
    ssm, attn = _ok(rows, mamba), _ok(rows, attention)
    for (mode, d_state), curve in ssm.groupby(["mode", "d_state"]):
        merged = curve.merge(
            attn[attn["mode"] == mode][["seq_len", "tokens_per_s"]], on="seq_len", suffixes=("_mamba", "_attention")
        ).sort_values("seq_len")
        found = crossover(
            merged["seq_len"].tolist(), merged["tokens_per_s_mamba"].tolist(), merged["tokens_per_s_attention"].tolist()
        )
        result.setdefault(mode, {})[str(int(d_state))] = asdict(found)
    return result


def wrapper_tax(rows: pd.DataFrame) -> dict:
    """{layer: {max_ratio, median_ratio, mode, seq_len, d_state, shapes}}: raw tokens/s over
    align_mamba's, per shape (mode, seq_len, d_state); the largest (at mode/seq_len/d_state) and the
    median over the shapes both ran (> 1: the wrapper is slower)."""
    keys = ["mode", "seq_len", "d_state"]
    result = {}
    for layer, raw in WRAPPER_PAIRS.items():
        ours, bare = (_ok(rows, name).fillna({"d_state": -1}) for name in (layer, raw))
        merged = ours.merge(bare[keys + ["tokens_per_s"]], on=keys, suffixes=("", "_raw"))
        if merged.empty:
            continue
        ratio = merged["tokens_per_s_raw"] / merged["tokens_per_s"]
        worst = merged.loc[ratio.idxmax()]
        result[layer] = {
            "max_ratio": float(ratio.max()),
            "median_ratio": float(ratio.median()),
            "mode": worst["mode"],
            "seq_len": int(worst["seq_len"]),
            "d_state": None if worst["d_state"] < 0 else int(worst["d_state"]),
            "shapes": len(merged),
        }
    return result


def versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide what ran (None: not importable here)."""
    found = {}
    for name in PACKAGES:
        module = optional_module(name)
        found[name] = getattr(module, "__version__", None) if module is not None else None
    return found


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _finite_or_none(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def training_speedup(ladder: list[dict]) -> dict | None:
    """The highest rung that ran (status ok), its ms/step and its speedup over the naive rung."""
    ran = [row for row in ladder if row["status"] == "ok"]
    if not ran:
        return None
    last = ran[-1]
    return {
        "rung": last["rung"],
        "description": last["description"],
        "ms_per_step": last["ms_per_step"],
        "speedup_vs_naive": last["speedup_vs_naive"],
    }


def build_summary(cfg, rows: pd.DataFrame, ladder: list[dict], device: torch.device, dtype: str) -> dict:
    """summary.json: device, versions, wrapper tax, crossovers, the ladder's speedup and the config."""
    counts = rows["status"].value_counts().to_dict() if not rows.empty else {}
    return _finite_or_none(
        {
            "device": device_name(device),
            "device_type": device.type,
            "dtype": dtype,
            "versions": versions(),
            "rows": {status: int(counts.get(status, 0)) for status in ("ok", "oom", "skipped")},
            "wrapper_tax": wrapper_tax(rows),
            "crossover": crossovers(rows),
            "training_speedup": training_speedup(ladder),
            "config": to_dict(cfg),
        }
    )
