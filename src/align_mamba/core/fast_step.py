"""The training step's speed levers (TrainConfig.cuda_graph, TrainConfig.compile) for core.loop.

A task that offers them splits its loss in two (the MQAR cells do; the tagger does not):
    task.step_inputs(step) -> tuple   the batch of `step` on the device: tensors of fixed shapes per
                                      run, plus constants (a slice, None) that never change
    task.inputs_loss(inputs) -> ()    the scalar loss of those inputs, reading no device value

compile: `torch.compile(task.inputs_loss)`, the forward and the loss as one traced function, so
inductor fuses the glue (embedding, norms, gates, residual adds, the cross-entropy); the modules of
mamba-ssm and flash-linear-attention run eagerly inside it (graph breaks), because tracing their
autotuned Triton kernels is not something every torch/Triton pair survives. Validation calls the
uncompiled model: its batch shapes differ and would recompile.

cuda_graph: GraphStep runs WARMUP_STEPS real training steps eagerly on a side stream (Triton
autotunes, inductor compiles, AdamW allocates its state), then captures the next step, forward,
backward, clipping and the capturable fused AdamW update, in one CUDA graph and replays it for
that step and every later one. The batch is copied into static input buffers before each replay
and the learning rate into the optimizer's lr tensors, so one capture serves the whole schedule.
CUDA only: on another device the loop refuses the setting with one line (ConfigError) rather than
train a different path than the one the results would name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from align_mamba.core.errors import ConfigError

log = logging.getLogger("align_mamba.core.fast_step")

# Eager steps before the capture: the first compiles and autotunes, the second and third run on
# warm caches and settle the allocator, as PyTorch's whole-network capture example does.
WARMUP_STEPS = 3
# Modules whose forward launches autotuned Triton kernels; compile leaves them eager.
KERNEL_PACKAGES = ("mamba_ssm", "fla", "causal_conv1d")

Inputs = tuple
Update = Callable[[torch.Tensor], torch.Tensor]


def supports_levers(task) -> bool:
    """Whether `task` splits its loss into step_inputs/inputs_loss (see the module doc)."""
    return callable(getattr(task, "step_inputs", None)) and callable(getattr(task, "inputs_loss", None))


def check_levers(cuda_graph: bool, compile_mode: str, task) -> None:
    """ConfigError (one line) when a requested lever cannot run for `task` on its device."""
    if not (cuda_graph or compile_mode != "none"):
        return
    if not supports_levers(task):
        raise ConfigError(
            f"{task.kind} {task.name}: cuda_graph and compile need a task with step_inputs/inputs_loss "
            f"(the MQAR cells); set cuda_graph: false and compile: none for it"
        )
    if cuda_graph and task.device.type != "cuda":
        raise ConfigError(
            f"{task.kind} {task.name}: cuda_graph: true needs device cuda, but this run resolved device "
            f"{task.device.type}; set cuda_graph: false (or run.device: cuda on a GPU machine)"
        )


def isolate_kernels(model: nn.Module) -> int:
    """Keep torch.compile out of the modules of KERNEL_PACKAGES (their forward becomes a graph
    break); returns how many. The reference backend has none: there everything is compiled."""
    count = 0
    for module in model.modules():
        if type(module).__module__.split(".")[0] in KERNEL_PACKAGES and not getattr(module, "_kernels_isolated", False):
            module.forward = torch.compiler.disable(module.forward, recursive=True)
            module._kernels_isolated = True
            count += 1
    return count


def compiled_loss(task, mode: str) -> Callable[[Inputs], torch.Tensor]:
    """task.inputs_loss, compiled with `mode` unless mode is "none"."""
    if mode == "none":
        return task.inputs_loss
    isolated = isolate_kernels(task.model)
    log.info("%s: torch.compile mode %s of the loss (%d kernel modules left eager)", task.name, mode, isolated)
    return torch.compile(task.inputs_loss, mode=mode, dynamic=False)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write `lr` into every group: in place into a tensor lr (a captured graph reads that memory)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def use_tensor_lr(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Give every group its learning rate as a 0-dim float32 tensor on `device` (after construction and
    after a resume, whose state dict may carry a float or a CPU tensor)."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)


def make_optimizer(groups: list[dict], lr: float, device: torch.device, cuda_graph: bool) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95): fused on CUDA; capturable with a tensor learning rate for cuda_graph,
    so the step counter and the schedule live on the device and a replayed graph sees them change."""
    on_cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=on_cuda, capturable=cuda_graph and on_cuda)
    if cuda_graph:
        use_tensor_lr(optimizer, device)
    return optimizer


def refill(static: Inputs, fresh: Inputs) -> None:
    """Copy the tensors of `fresh` into the buffers of `static` (same shapes); constants must match."""
    if len(static) != len(fresh):
        raise ConfigError(f"cuda_graph: a batch has {len(fresh)} parts, the captured one {len(static)}")
    for i, (buffer, value) in enumerate(zip(static, fresh)):
        if isinstance(buffer, torch.Tensor):
            if buffer.shape != value.shape or buffer.dtype != value.dtype:
                raise ConfigError(
                    f"cuda_graph: batch part {i} is {tuple(value.shape)} {value.dtype}, the captured graph "
                    f"holds {tuple(buffer.shape)} {buffer.dtype}; every step's batch must have one shape"
                )
            buffer.copy_(value, non_blocking=True)
        elif buffer != value:
            raise ConfigError(f"cuda_graph: batch part {i} changed from {buffer!r} to {value!r} after capture")


def static_copy(inputs: Inputs) -> Inputs:
    """Buffers that outlive the capture: clones of the tensors, the constants as they are."""
    return tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)


def capture_cuda_graph(body: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """(replay, outputs): `body` captured in one CUDA graph; its kernels run only at each replay."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = body()
    return graph.replay, outputs


def on_side_stream(device: torch.device, run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """run() on a side stream ordered after, and before, the current one (CUDA); as is elsewhere."""
    if device.type != "cuda":
        return run()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        result = run()
    torch.cuda.current_stream(device).wait_stream(side)
    return result


class GraphStep:
    """The whole training step as one replayed CUDA graph (see the module doc).

    loss_fn(inputs) -> () loss; update(loss) -> (2,) [loss, grad norm]: zero_grad(set_to_none),
    backward, clip, optimizer step. `capture` is capture_cuda_graph; a test may pass another.
    """

    def __init__(
        self,
        device: torch.device,
        loss_fn: Callable[[Inputs], torch.Tensor],
        update: Update,
        warmup: int = WARMUP_STEPS,
        capture: Callable = capture_cuda_graph,
    ):
        self.device, self.loss_fn, self.update = device, loss_fn, update
        self.warmup, self.capture = warmup, capture
        self.warmed = 0
        self.inputs: Inputs | None = None
        self.replay: Callable[[], None] | None = None
        self.outputs: torch.Tensor | None = None

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        """One training step on `inputs`; (2,) [loss, grad norm] on the device, a fresh tensor."""
        if self.replay is None and self.warmed < self.warmup:
            self.warmed += 1
            return on_side_stream(self.device, lambda: self.update(self.loss_fn(inputs)))
        if self.replay is None:
            self.inputs = static_copy(inputs)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # once: the warm-up's work is done before capture
            self.replay, self.outputs = self.capture(self.body)
            log.info("captured the training step in one CUDA graph after %d warm-up steps", self.warmed)
        else:
            refill(self.inputs, inputs)
        self.replay()
        return self.outputs.clone()  # the next replay overwrites outputs; pending rows keep their own

    def body(self) -> torch.Tensor:
        return self.update(self.loss_fn(self.inputs))


def mps_active() -> bool:
    """Whether this process was started to use a CUDA MPS daemon (tools/mps.sh exports its pipe)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")
    return bool(pipe) and (Path(pipe) / "control").exists()


def train_path(cuda_graph: bool, compile_mode: str, fused: bool) -> dict:
    """How a run trained, for train.json: the levers, whether mamba-ssm's fused Mamba-2 path ran
    (causal-conv1d installed; core.backends.runs_fused), MPS, and where compiled kernels were cached."""
    return {
        "cuda_graph": cuda_graph,
        "compile": compile_mode,
        "fused_mamba2": fused,
        "mps": mps_active(),
        "kernel_cache": os.environ.get("ALIGN_MAMBA_CACHE_DIR", ""),
    }
