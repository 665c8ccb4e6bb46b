"""Run the benchmark: every case x d_state x mode x length, an OOM recorded as a row, then the ladder.

Outputs in OUT (written atomically): mixers.csv (one row per measurement, COLUMNS), train_step.csv
(one row per ladder rung) and summary.json.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from align_mamba.bench import train_step
from align_mamba.bench.cases import MIXER_CASES, Built, build_architecture, build_mixer
from align_mamba.bench.config import BenchConfig, batch_size, dtype_name
from align_mamba.bench.summary import build_summary
from align_mamba.bench.timing import MIB, CaseSkipped, first_line, free_memory, is_oom, time_call
from align_mamba.core.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger("align_mamba.bench")
COLUMNS = [
    "kind",
    "name",
    "backend",
    "fused",
    "mode",
    "seq_len",
    "batch",
    "tokens",
    "d_model",
    "d_state",
    "dtype",
    "status",
    "reason",
    "median_ms",
    "tokens_per_s",
    "peak_mib",
    "state_mib",
    "repeats",
]


@dataclass(frozen=True)
class Group:
    """One built module: a case at one d_state (None where it has none), measured in every mode."""

    kind: str
    name: str
    d_state: int | None
    experimental: bool = False


def plan(cfg: BenchConfig) -> list[Group]:
    groups = []
    for name in cfg.mixers:
        case = MIXER_CASES[name]
        for d_state in cfg.d_states if case.uses_state else (None,):
            groups.append(Group(case.kind, name, d_state, case.experimental))
    for variant in cfg.architectures:
        for d_state in cfg.d_states if variant != "transformer" else (cfg.d_states[0],):
            groups.append(Group("architecture", variant, d_state))
    return groups


def lengths_of(cfg: BenchConfig, mode: str) -> tuple[int, ...]:
    return cfg.decode_contexts if mode == "decode" else cfg.lengths


def _build(group: Group, cfg: BenchConfig, device: torch.device, dtype: torch.dtype) -> Built:
    torch.manual_seed(cfg.seed)
    if group.kind == "architecture":
        return build_architecture(cfg, group.name, group.d_state, device, dtype)
    return build_mixer(MIXER_CASES[group.name], cfg, group.d_state, device, dtype)


class Runner:
    def __init__(self, cfg: BenchConfig, device: torch.device, dtype: torch.dtype, progress: tqdm):
        self.cfg, self.device, self.dtype, self.progress = cfg, device, dtype, progress

    def row(self, group: Group, mode: str, length: int, built: Built | None, **values) -> dict:
        batch = batch_size(self.cfg.tokens_per_batch, length)
        self.progress.update(1)
        return {
            "kind": group.kind,
            "name": group.name,
            "backend": built.backend if built else "",
            "fused": built.fused if built else False,
            "mode": mode,
            "seq_len": length,
            "batch": batch,
            "tokens": batch if mode == "decode" else batch * length,
            "d_model": self.cfg.d_model,
            "d_state": group.d_state,
            "dtype": built.dtype_label if built else dtype_name(self.dtype),
            "status": "ok",
            "reason": "",
            "median_ms": math.nan,
            "tokens_per_s": math.nan,
            "peak_mib": math.nan,
            "state_mib": math.nan,
            "repeats": self.cfg.repeats,
            **values,
        }

    def group_rows(self, group: Group) -> Iterator[dict]:
        self.progress.set_description(f"{group.name}" + (f" N={group.d_state}" if group.d_state else ""))
        try:
            built = _build(group, self.cfg, self.device, self.dtype)
        except Exception as err:
            if not (isinstance(err, CaseSkipped) or group.experimental):
                raise
            reason = str(err) if isinstance(err, CaseSkipped) else first_line(err)
            log.info("%s: skipped (%s)", group.name, reason)
            for mode in self.cfg.modes:
                for length in lengths_of(self.cfg, mode):
                    yield self.row(group, mode, length, None, status="skipped", reason=reason)
            return
        for mode in self.cfg.modes:
            yield from self.mode_rows(group, built, mode)
        del built
        free_memory()

    def mode_rows(self, group: Group, built: Built, mode: str) -> Iterator[dict]:
        """Every length of one mode; after an OOM, the longer lengths are skipped rows."""
        oom_at = None
        for length in lengths_of(self.cfg, mode):
            if oom_at is not None:
                yield self.row(group, mode, length, built, status="skipped", reason=f"out of memory at {oom_at}")
                continue
            result = self.measure(group, built, mode, length)
            if result.get("status") == "oom":
                oom_at = length
            yield self.row(group, mode, length, built, **result)

    def measure(self, group: Group, built: Built, mode: str, length: int) -> dict:
        """Time one (case, mode, length): the row's measured values or its oom/skipped status."""
        batch = batch_size(self.cfg.tokens_per_batch, length)
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        failure = None
        try:
            workload = built.workload(mode, batch, length, gen)
            timing = time_call(workload, self.device, self.cfg.repeats, self.cfg.warmup)
            state_mib = workload.state_bytes / MIB if mode == "decode" else math.nan
        except CaseSkipped as skip:
            failure = {"status": "skipped", "reason": str(skip)}
        except Exception as err:
            if not (is_oom(err) or group.experimental):
                raise
            failure = {"status": "oom" if is_oom(err) else "skipped", "reason": first_line(err)}
        workload = None
        free_memory()  # outside the except block: its traceback holds the failed call's tensors
        if failure is not None:
            log.warning("%s %s L=%d: %s (%s)", group.name, mode, length, failure["status"], failure["reason"])
            return failure
        tokens = batch if mode == "decode" else batch * length
        return {
            "median_ms": timing.median_ms,
            "tokens_per_s": tokens / (timing.median_ms / 1e3),
            "peak_mib": timing.peak_mib,
            "state_mib": state_mib,
        }


def run_bench(cfg: BenchConfig, out: Path) -> dict:
    """Measure everything in `cfg`, write OUT/mixers.csv, OUT/train_step.csv, OUT/summary.json; return the summary."""
    device = cfg.torch_device()
    dtype = cfg.torch_dtype(device)
    groups = plan(cfg)
    total = sum(len(lengths_of(cfg, mode)) for _ in groups for mode in cfg.modes)
    log.info(
        "bench on %s (%s): %d cases, %d rows, ladder rungs %s",
        device,
        dtype_name(dtype),
        len(groups),
        total,
        list(cfg.ladder_rungs),
    )
    rows = []
    with tqdm(total=total, desc="bench", dynamic_ncols=True, disable=None) as progress:
        runner = Runner(cfg, device, dtype, progress)
        for group in groups:
            rows.extend(runner.group_rows(group))
            # Rewritten after every case: a run stopped by a time limit keeps what it measured.
            mixers = pd.DataFrame(rows, columns=COLUMNS).astype({"d_state": "Int64"})  # attention has none
            atomic_write_text(out / "mixers.csv", mixers.to_csv(index=False))
    mixers = pd.DataFrame(rows, columns=COLUMNS).astype({"d_state": "Int64"})
    atomic_write_text(out / "mixers.csv", mixers.to_csv(index=False))

    def write_ladder(ladder_rows: list[dict]) -> None:
        frame = pd.DataFrame(ladder_rows, columns=train_step.COLUMNS)
        atomic_write_text(out / "train_step.csv", frame.to_csv(index=False))

    ladder = train_step.run_ladder(cfg, device, write_ladder) if cfg.ladder_rungs else []
    write_ladder(ladder)
    summary = build_summary(cfg, mixers, ladder, device, dtype_name(dtype))
    atomic_write_json(out / "summary.json", summary)
    return summary
