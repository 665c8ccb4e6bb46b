"""The training-step throughput ladder: the H100 anchor's LM, one optimisation per rung.

Every rung trains align_mamba's own DecoderLM (a pre-norm Mamba-2 LM, fp32 weights) on batches of
the real MQAR generator's decoder layout, and adds one change to the rung before it:
  0 naive: fp32 throughout, full-vocabulary logits at every position (RecallModel.full_logits) and
    next-token cross-entropy over all positions; mamba-ssm's unfused path; AdamW with foreach=False.
  1 bf16 autocast (the anchor file's 1.39 M tokens/s step ran here, with fused AdamW).
  2 logits only at the query positions (RecallModel.forward) and cross-entropy over them.
  3 mamba-ssm's fused Mamba-2 path (use_mem_eff_path=True; needs causal-conv1d).
  4 fused AdamW: rungs 2-4 together are what align_mamba.recall.train runs.
  5 torch.compile of the whole model, or where that fails of its norms, embedding and head.
  6 CUDA graphs through torch.compile(mode="reduce-overhead").
A change that cannot apply here is a skipped row with the reason, and the rungs above it run
without it (their fused_mamba/compile columns say what ran). No gradient clipping (nor its host
sync): the anchor's step had none either. On the CPU, bf16 rungs run in fp32 (as train.py does).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from align_mamba.bench.config import BenchConfig
from align_mamba.bench.decode import autocast
from align_mamba.bench.timing import Workload, first_line, free_memory, is_oom, time_call
from align_mamba.core.backends import has_causal_conv1d, resolve_backend
from align_mamba.recall.models import RecallModel, build_model
from align_mamba.recall.mqar import IGNORE_INDEX, generate_mqar
from align_mamba.recall.train import parameter_groups

log = logging.getLogger("align_mamba.bench.train_step")
COLUMNS = [
    "rung",
    "description",
    "ms_per_step",
    "tokens_per_s",
    "speedup_vs_naive",
    "status",
    "reason",
    "dtype",
    "logits",
    "fused_mamba",
    "fused_adamw",
    "compile",
    "backend",
    "batch",
    "seq_len",
    "repeats",
]


@dataclass(frozen=True)
class Rung:
    rung: int
    description: str
    bf16: bool
    full_logits: bool
    fused_mamba: bool
    fused_adamw: bool
    compile_mode: str  # "" (eager), "default" or "reduce-overhead"


RUNGS = (
    Rung(
        0,
        "naive: fp32, full-vocabulary logits + CE at every position, unfused Mamba-2, AdamW foreach=False",
        False,
        True,
        False,
        False,
        "",
    ),
    Rung(1, "+ bf16 autocast", True, True, False, False, ""),
    Rung(2, "+ logits only at the query positions", True, False, False, False, ""),
    Rung(3, "+ fused Mamba-2 path (use_mem_eff_path, causal-conv1d)", True, False, True, False, ""),
    Rung(4, "+ fused AdamW (= align_mamba.recall.train's step)", True, False, True, True, ""),
    Rung(5, "+ torch.compile", True, False, True, True, "default"),
    Rung(6, "+ CUDA graphs (torch.compile mode reduce-overhead)", True, False, True, True, "reduce-overhead"),
)


def mqar_batches(cfg: BenchConfig, count: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` batches (inputs, labels), each (ladder_batch, ladder_seq_len), of MQAR's decoder layout."""
    train = generate_mqar(cfg.ladder_data_config(count))["train"].decoder
    inputs = torch.from_numpy(train.inputs).long().to(device).split(cfg.ladder_batch)
    labels = torch.from_numpy(train.labels).long().to(device).split(cfg.ladder_batch)
    return list(zip(inputs, labels))


def fused_mamba_unavailable(backend: str) -> str | None:
    """Why mamba-ssm's fused Mamba-2 path cannot run here, or None."""
    if backend != "kernels":
        return "the fused Mamba-2 path needs mamba-ssm's kernels (CUDA); this run uses the reference"
    if not has_causal_conv1d():
        return "causal-conv1d missing"
    return None


def unfused_mamba_unavailable(cfg: BenchConfig, backend: str) -> str | None:
    """Why mamba-ssm's unfused Mamba-2 path cannot run the ladder's model here, or None.

    With causal-conv1d installed, that path hands causal_conv1d_fn a slice of the in_proj output,
    whose row stride causal-conv1d requires to be a multiple of 8 (the fused path copies it first).
    """
    model = cfg.ladder_model_config()
    d_inner = model.expand * model.d_model
    width = 2 * d_inner + 2 * model.d_state + d_inner // model.headdim  # in_proj: z, x, B, C, dt (one group)
    if backend == "kernels" and has_causal_conv1d() and width % 8:
        return (
            f"mamba-ssm's unfused Mamba-2 path with causal-conv1d needs the in_proj width to be a multiple "
            f"of 8, got {width} (ladder_d_model {model.d_model}, ladder_d_state {model.d_state}, "
            f"ladder_headdim {model.headdim})"
        )
    return None


def set_fused_mamba(model: RecallModel, fused: bool) -> None:
    """Switch every mamba-ssm Mamba-2 layer between its fused and unfused forward."""
    for module in model.modules():
        if hasattr(module, "use_mem_eff_path"):
            module.use_mem_eff_path = module.fused = fused


def compile_parts(model: RecallModel, mode: str) -> None:
    """Compile the non-kernel parts in place: the embedding, every RMSNorm and the head."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Embedding, torch.nn.RMSNorm)) or module is model.lm_head:
            module.compile(mode=mode)


def step_loss(model, inputs: torch.Tensor, labels: torch.Tensor, full_logits: bool) -> torch.Tensor:
    """Naive: next-token CE over all positions of (B, L, V) logits; else CE at the queries only."""
    if full_logits:
        logits = model.full_logits(inputs)[:, :-1]  # (B, L-1, V)
        return F.cross_entropy(logits.flatten(0, 1), inputs[:, 1:].flatten())
    query_mask = labels != IGNORE_INDEX
    return F.cross_entropy(model(inputs, query_mask), labels[query_mask])  # logits (Nq, V)


class Ladder:
    def __init__(self, cfg: BenchConfig, device: torch.device):
        self.cfg, self.device, self.dtype = cfg, device, cfg.torch_dtype(device)
        self.backend = resolve_backend("auto", device, "mamba2")
        self.warmup = max(cfg.warmup, 3)  # compile, then (reduce-overhead) record the CUDA graph
        self.batches = mqar_batches(cfg, self.warmup + cfg.repeats, device)

    def workload(self, rung: Rung, fused_mamba: bool, compile_whole: bool) -> Workload:
        torch.manual_seed(self.cfg.seed)  # every rung starts from the same weights
        model = build_model(self.cfg.ladder_model_config(), self.backend).to(self.device)
        set_fused_mamba(model, fused_mamba)
        optimizer = torch.optim.AdamW(
            parameter_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), foreach=False, fused=rung.fused_adamw
        )
        forward = model
        if rung.compile_mode:
            torch._dynamo.reset()
            if compile_whole:
                forward = torch.compile(model, mode=rung.compile_mode)
            else:
                compile_parts(model, rung.compile_mode)
        order = itertools.cycle(self.batches)

        def run(batch):
            optimizer.zero_grad(set_to_none=True)
            with autocast(self.device, self.dtype if rung.bf16 else torch.float32):
                loss = step_loss(forward, *batch, rung.full_logits)
            loss.backward()
            optimizer.step()

        return Workload(lambda: next(order), run)

    def measure(self, rung: Rung, fused_mamba: bool) -> tuple[float, str, str]:
        """(ms per step, status, reason) of one rung; a failed whole-model compile falls back to parts."""
        failures = []
        for compile_whole in [True, False] if rung.compile_mode else [True]:
            error, oom = "", False
            try:
                timing = time_call(
                    self.workload(rung, fused_mamba, compile_whole), self.device, self.cfg.repeats, self.warmup
                )
            except Exception as err:  # compile errors come in many types; anything else is a bug
                if not (is_oom(err) or rung.compile_mode):
                    raise
                error, oom = first_line(err), is_oom(err)
            free_memory()  # here, not in the except block, whose traceback holds the step's tensors
            if not error:
                note = (
                    ""
                    if compile_whole
                    else (f"torch.compile(model) failed ({failures[0]}); compiled the norms, embedding and head only")
                )
                return timing.median_ms, "ok", note
            if oom:
                return float("nan"), "oom", error
            failures.append(error)
            log.warning(
                "rung %d: torch.compile of the %s failed: %s",
                rung.rung,
                "whole model" if compile_whole else "parts",
                error,
            )
        return float("nan"), "skipped", "torch.compile failed: " + "; on the parts: ".join(failures)


def run_ladder(cfg: BenchConfig, device: torch.device, on_row=None) -> list[dict]:
    """One row per rung in cfg.ladder_rungs (columns: COLUMNS); speedups against rung 0.

    on_row(rows) is called after every rung with the rows so far (to save partial results).
    """
    ladder = Ladder(cfg, device)
    unfusable = fused_mamba_unavailable(ladder.backend)
    only_fused = unfused_mamba_unavailable(cfg, ladder.backend)
    tokens = cfg.ladder_batch * cfg.ladder_seq_len
    rows = []
    for rung in (r for r in RUNGS if r.rung in cfg.ladder_rungs):
        fused = rung.fused_mamba and unfusable is None
        row = {
            "rung": rung.rung,
            "description": rung.description,
            "dtype": "bf16-autocast" if rung.bf16 and ladder.dtype != torch.float32 else "fp32",
            "logits": "all" if rung.full_logits else "queries",
            "fused_mamba": fused,
            "fused_adamw": rung.fused_adamw,
            "compile": rung.compile_mode or "none",
            "backend": ladder.backend,
            "batch": cfg.ladder_batch,
            "seq_len": cfg.ladder_seq_len,
            "repeats": cfg.repeats,
        }
        skip = skip_reason(rung, unfusable, only_fused, device)
        if skip:
            rows.append({**row, "ms_per_step": float("nan"), "status": "skipped", "reason": skip})
        else:
            ms, status, reason = ladder.measure(rung, fused)
            if rung.fused_mamba and not fused and not reason:
                reason = f"runs without the fused Mamba-2 path ({unfusable})"
            rows.append({**row, "ms_per_step": ms, "status": status, "reason": reason})
            log.info("ladder rung %d: %s %.2f ms/step", rung.rung, status, ms)
        naive = rows[0]["ms_per_step"] if rows[0]["rung"] == 0 else float("nan")
        rows[-1]["tokens_per_s"] = tokens / (rows[-1]["ms_per_step"] / 1e3)
        rows[-1]["speedup_vs_naive"] = naive / rows[-1]["ms_per_step"]
        if on_row is not None:
            on_row(rows)
    return rows


def skip_reason(rung: Rung, unfusable: str | None, only_fused: str | None, device: torch.device) -> str:
    """Why this rung cannot run here ('' when it can): its own change, or the unfused path it needs."""
    if rung.rung == 3 and unfusable:
        return unfusable
    if not rung.fused_mamba and only_fused:
        return only_fused
    if rung.compile_mode == "reduce-overhead" and device.type != "cuda":
        return "CUDA graphs need device cuda"
    return ""
