"""Optimisation settings shared by every study's training loop (align_mamba.core.loop).

Kept free of torch so that validating a params file stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass

from align_mamba.core.params import BACKENDS, DEVICES, require, require_choice, require_positive

# torch.compile modes of the `compile` setting. "none": eager (today's step). CUDA graphs come from
# `cuda_graph`, which captures the whole step, so inductor's own graphs (reduce-overhead) are not offered.
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one model. `steps` is a budget; the validation metric may stop it earlier.

    target_accuracy is the value of the task's validation selection metric (MQAR: query accuracy;
    the tagger: span F1) at which training stops.

    Speed levers (align_mamba.core.fast_step; both off by default, the eager step):
    cuda_graph: capture the whole step (forward, backward, clipping, fused AdamW) in one CUDA graph
    after warm-up steps and replay it; CUDA only: on a CPU it is refused, never silently dropped.
    compile: torch.compile mode of the model's glue (norms, gates, residuals, loss); mamba-ssm's
    Triton kernels stay outside the compiled graphs. Runs on the CPU too.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    checkpoint_every: int = 100
    patience: int = 5
    target_accuracy: float = 1.0
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    backend: str = "auto"
    cuda_graph: bool = False
    compile: str = "none"

    def __post_init__(self) -> None:
        require_positive(
            self, "steps", "batch_size", "lr", "eval_every", "checkpoint_every", "eval_batch_size", "grad_clip"
        )
        require(self.patience >= 0, f"patience must be >= 0 (0: never stop on a plateau), got {self.patience}")
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        require(0 < self.target_accuracy <= 1, f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        require_choice("device", self.device, DEVICES)
        require_choice("backend", self.backend, BACKENDS)
        require_choice("compile", self.compile, COMPILE_MODES)
        require(
            not (self.cuda_graph and self.device == "cpu"),
            "cuda_graph: true needs device cuda (it captures GPU kernels); set run.device to cuda or cuda_graph to false",
        )
