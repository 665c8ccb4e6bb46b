"""What the benchmark runs: mixer, raw mamba-ssm/SDPA and architecture cases, by explicit name.

A mixer case is one layer, (B, L, D) -> (B, L, D), built the way align_mamba builds it; a raw case
is the bare mamba-ssm module or SDPA between bare projections at the same shape (the "no wrapper
tax" baseline); an architecture is a whole model from models.build_model. Mixer and raw layers run
with their weights in the benchmark dtype (as the H100 anchor did); architectures keep float32
weights under autocast, as training does. Forward is inference (no_grad); train is forward plus
backward of a mean loss (the input also needs its gradient, as inside a stack of layers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from align_mamba.bench.config import BenchConfig, dtype_name
from align_mamba.bench.decode import architecture_decode, autocast, mixer_decode
from align_mamba.bench.timing import CaseSkipped, Workload
from align_mamba.core.backends import has_causal_conv1d, mamba_ssm_status, runs_fused
from align_mamba.mixers.attention import SelfAttention
from align_mamba.mixers.delta import DeltaNet, GatedDeltaNet
from align_mamba.mixers.mamba1 import Mamba
from align_mamba.mixers.mamba2 import Mamba2
from align_mamba.mixers.mamba3 import Mamba3
from align_mamba.recall.models import RecallModel, build_model


def loss_of(out: torch.Tensor) -> torch.Tensor:
    """A mean loss whose gradient is a dense, contiguous tensor (that of .mean() is a broadcast)."""
    return out.float().square().mean()


class RawAttention(SelfAttention):
    """Bare causal attention: the same projections around F.scaled_dot_product_attention, no RoPE."""

    backend, fused = "sdpa", False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) → (B, L, D)."""
        batch, length, _ = x.shape
        q, k, v = self.qkv_proj(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, -1))

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], position: int) -> torch.Tensor:
        """x (B, 1, D) at `position` against the cache (k, v), each (B, H, Lmax, Dh) → (B, 1, D)."""
        batch = x.shape[0]
        q, k, v = self.qkv_proj(x).view(batch, 1, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cache[0][:, :, position], cache[1][:, :, position] = k[:, :, 0], v[:, :, 0]
        y = F.scaled_dot_product_attention(q, cache[0][:, :, : position + 1], cache[1][:, :, : position + 1])
        return self.out_proj(y.transpose(1, 2).reshape(batch, 1, -1))


def layer_backend(device: torch.device, mixer: str) -> str:
    """The backend align_mamba's layers run on here: the reference on the CPU, mamba-ssm's kernels on
    cuda. On cuda without them the case is skipped rather than run on the reference, whose Mamba-1
    scan loops over time in Python (hours at GPU lengths); mamba2_reference measures the reference."""
    if mixer == "attention":
        return "sdpa"
    if device.type != "cuda":
        return "reference"
    reason = mamba_ssm_status(mixer)
    if reason is not None:
        raise CaseSkipped(
            f"align_mamba's {mixer} layers run mamba-ssm's kernels on cuda, which cannot run here: {reason}"
        )
    return "kernels"


def _need_kernels(device: torch.device, mixer: str) -> None:
    reason = "the device is the CPU" if device.type != "cuda" else mamba_ssm_status(mixer)
    if reason is not None:
        raise CaseSkipped(f"raw mamba-ssm needs CUDA and mamba-ssm: {reason}")


def _raw_mamba2(cfg: BenchConfig, d_state: int, device: torch.device) -> nn.Module:
    _need_kernels(device, "mamba2")
    from mamba_ssm.modules.mamba2 import Mamba2 as KernelMamba2

    fused = has_causal_conv1d()  # the same path align_mamba's factory takes on this machine
    module = KernelMamba2(
        cfg.d_model,
        d_state=d_state,
        d_conv=cfg.d_conv,
        expand=cfg.expand,
        headdim=cfg.headdim,
        chunk_size=cfg.chunk_size,
        use_mem_eff_path=fused,
    )
    module.backend, module.fused = "kernels", fused
    return module


def _raw_mamba1(cfg: BenchConfig, d_state: int, device: torch.device) -> nn.Module:
    _need_kernels(device, "mamba1")
    from mamba_ssm.modules.mamba_simple import Mamba as KernelMamba

    module = KernelMamba(cfg.d_model, d_state=d_state, d_conv=cfg.d_conv, expand=cfg.expand, use_fast_path=True)
    module.backend, module.fused = "kernels", has_causal_conv1d()
    return module


def _mamba3(cfg: BenchConfig, d_state: int, device: torch.device) -> nn.Module:
    _need_kernels(device, "mamba2")
    try:
        from mamba_ssm.modules.mamba3 import Mamba3
    except Exception as err:  # an older mamba-ssm, or its Triton kernels fail to import
        raise CaseSkipped(f"mamba_ssm.Mamba3 is not importable: {type(err).__name__}: {err}") from None
    module = Mamba3(cfg.d_model, d_state=d_state, expand=cfg.expand, headdim=cfg.headdim)
    module.backend, module.fused = "kernels", True
    return module


@dataclass(frozen=True)
class MixerCase:
    """kind: mixer | raw. decode: how a decode step is driven (decode.DECODERS).
    uses_state: one row per d_state (False for attention). experimental: any error in a run
    becomes a skipped row with its message instead of stopping the benchmark."""

    kind: str
    build: Callable[[BenchConfig, int | None, torch.device], nn.Module]
    decode: str
    uses_state: bool = True
    experimental: bool = False


def _mamba2(cfg: BenchConfig, d_state: int, device: torch.device, backend: str) -> nn.Module:
    return Mamba2(
        cfg.d_model,
        d_state,
        d_conv=cfg.d_conv,
        expand=cfg.expand,
        headdim=cfg.headdim,
        chunk_size=cfg.chunk_size,
        backend=backend,
    )


def _delta(cfg: BenchConfig, d_state: int, device: torch.device, gated: bool) -> nn.Module:
    build, mixer = (GatedDeltaNet, "gated_deltanet") if gated else (DeltaNet, "deltanet")
    return build(
        cfg.d_model,
        d_state,
        headdim=cfg.headdim,
        expand=cfg.expand,
        d_conv=cfg.d_conv,
        chunk_size=cfg.chunk_size,
        backend=layer_backend(device, mixer),
    )


MIXER_CASES: dict[str, MixerCase] = {
    "attention": MixerCase(
        "mixer", lambda cfg, _, dev: SelfAttention(cfg.d_model, cfg.n_heads), "kv", uses_state=False
    ),
    "mamba2": MixerCase("mixer", lambda cfg, ds, dev: _mamba2(cfg, ds, dev, layer_backend(dev, "mamba2")), "recurrent"),
    "mamba2_reference": MixerCase("mixer", lambda cfg, ds, dev: _mamba2(cfg, ds, dev, "reference"), "recurrent"),
    "mamba1": MixerCase(
        "mixer",
        lambda cfg, ds, dev: Mamba(
            cfg.d_model, ds, d_conv=cfg.d_conv, expand=cfg.expand, backend=layer_backend(dev, "mamba1")
        ),
        "recurrent",
    ),
    "mamba3": MixerCase("raw", _mamba3, "mamba3", experimental=True),
    # align_mamba's Mamba-3 twin (on cuda the kernels layer is mamba_ssm.Mamba3 itself: case mamba3)
    "mamba3_reference": MixerCase(
        "mixer",
        lambda cfg, ds, dev: Mamba3(
            cfg.d_model, ds, expand=cfg.expand, headdim=cfg.headdim, chunk_size=cfg.chunk_size, backend="reference"
        ),
        "none",
    ),
    # flash-linear-attention's delta-rule kernels on cuda, linear_scan's reference on the CPU
    "gated_deltanet": MixerCase("mixer", lambda cfg, ds, dev: _delta(cfg, ds, dev, gated=True), "none"),
    "deltanet": MixerCase("mixer", lambda cfg, ds, dev: _delta(cfg, ds, dev, gated=False), "none"),
    "raw_attention": MixerCase(
        "raw", lambda cfg, _, dev: RawAttention(cfg.d_model, cfg.n_heads), "kv", uses_state=False
    ),
    "raw_mamba2": MixerCase("raw", _raw_mamba2, "recurrent"),
    "raw_mamba1": MixerCase("raw", _raw_mamba1, "recurrent"),
}


@dataclass
class Built:
    """A case built on the device: `workload(mode, batch, seq_len, generator)` gives one timed call."""

    module: nn.Module
    backend: str
    fused: bool
    dtype_label: str
    workload: Callable[[str, int, int, torch.Generator], Workload]


def build_mixer(
    case: MixerCase, cfg: BenchConfig, d_state: int | None, device: torch.device, dtype: torch.dtype
) -> Built:
    """Build a mixer/raw case with weights in `dtype` on `device` (raises CaseSkipped)."""
    module = case.build(cfg, d_state, device).to(device=device, dtype=dtype)
    backend = getattr(module, "backend", "sdpa")

    def workload(mode: str, batch: int, seq_len: int, gen: torch.Generator) -> Workload:
        def fresh(requires_grad=False):
            return torch.randn(
                batch, seq_len, cfg.d_model, device=device, dtype=dtype, generator=gen, requires_grad=requires_grad
            )

        if mode == "decode":
            return mixer_decode(module, case.decode, batch, seq_len, gen)
        if mode == "forward":
            return Workload(fresh, torch.no_grad()(module))  # no_grad as a decorator of the call

        def train_inputs():
            module.zero_grad(set_to_none=True)  # untimed: last repeat's gradients are not this one's
            return fresh(requires_grad=True)

        return Workload(train_inputs, lambda x: loss_of(module(x)).backward())

    return Built(module, backend, runs_fused(module), dtype_name(dtype), workload)


def architecture_inputs(model: RecallModel, batch: int, seq_len: int, gen: torch.Generator):
    """Random token ids: (inputs, context). Decoder-only: (B, L) and None. Hybrid: the MQAR
    seq2seq split of L tokens, a context of L - L//4 for the encoder and L//4 queries (at least 1)
    for the decoder, as a decoder-layout sequence of L holding L/4 pairs becomes in that layout."""
    device = model.embedding.weight.device
    vocab = model.config.vocab_size

    def tokens(length):
        return torch.randint(10, vocab, (batch, length), device=device, generator=gen)

    if model.config.layout == "decoder":
        return tokens(seq_len), None
    queries = max(1, seq_len // 4)
    return tokens(queries), tokens(max(1, seq_len - queries))


def build_architecture(cfg: BenchConfig, variant: str, d_state: int, device: torch.device, dtype: torch.dtype) -> Built:
    """A whole model (embedding + blocks; the head only in decode) under autocast to `dtype`."""
    model_cfg = cfg.model_config(variant, d_state)
    backend = layer_backend(device, model_cfg.mixer)
    model = build_model(model_cfg, "reference" if backend == "sdpa" else backend).to(device)
    label = dtype_name(dtype) if dtype == torch.float32 else f"{dtype_name(dtype)}-autocast"

    def workload(mode: str, batch: int, seq_len: int, gen: torch.Generator) -> Workload:
        if mode == "decode":
            return architecture_decode(model, batch, seq_len, dtype, gen)
        if mode == "forward":

            def forward(inputs):
                with torch.no_grad(), autocast(device, dtype):
                    model.hidden_states(*inputs)

            return Workload(lambda: architecture_inputs(model, batch, seq_len, gen), forward)

        def train_inputs():
            model.zero_grad(set_to_none=True)
            return architecture_inputs(model, batch, seq_len, gen)

        def train(inputs):
            with autocast(device, dtype):
                loss = loss_of(model.hidden_states(*inputs))
            loss.backward()

        return Workload(train_inputs, train)

    return Built(model, backend, runs_fused(model), label, workload)
