"""Decode-step workloads: one new token given a context of Lc tokens (tokens/s = B / time).

A Mamba layer carries a fixed-size state, so its step costs the same at every Lc; the state is
filled with random values standing for what a context would leave there (the values do not change
the arithmetic). Attention carries a KV cache of Lc positions (random keys and values) and the new
token attends to all of them through SDPA. The hybrid's cross-attention reads the encoder memory of
Lc positions through keys and values projected once, as a real decoder would cache them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from align_mamba.bench.timing import CaseSkipped, Workload
from align_mamba.core.errors import ConfigError
from align_mamba.mixers.attention import CrossAttention, SelfAttention
from align_mamba.recall.models import DecoderLM, HybridEncoderDecoder, RecallModel


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16/fp16 autocast for architectures (fp32 weights, as train.py runs them); none in fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _fill_(tensors: Sequence[torch.Tensor], gen: torch.Generator) -> None:
    with torch.no_grad():
        for t in tensors:
            t.normal_(generator=gen)


def _recurrent(module: nn.Module, batch: int, context: int, gen: torch.Generator) -> Workload:
    """mamba-ssm's step(x (B, 1, D), conv_state, ssm_state), on the kernels or the reference."""
    states = module.allocate_inference_cache(batch, context + 1)
    _fill_(states, gen)
    return Workload(lambda: _token(module, batch, gen, (batch, 1)), lambda x: module.step(x, *states), nbytes(states))


def _kv(module: nn.Module, batch: int, context: int, gen: torch.Generator) -> Workload:
    """step(x (B, 1, D), (k, v), position=Lc) against a cache holding Lc random positions."""
    cache = module.allocate_inference_cache(batch, context + 1)
    _fill_([c[:, :, :context] for c in cache], gen)
    return Workload(
        lambda: _token(module, batch, gen, (batch, 1)), lambda x: module.step(x, cache, context), nbytes(cache)
    )


def _mamba3(module: nn.Module, batch: int, context: int, gen: torch.Generator) -> Workload:
    """mamba_ssm.Mamba3.step(u (B, D), angle_state, ssm_state, k_state, v_state)."""
    import mamba_ssm.modules.mamba3 as mamba3

    if mamba3.mamba3_step_fn is None:
        raise CaseSkipped("Mamba-3's decode kernel (CuTe DSL: nvidia-cutlass-dsl, quack-kernels) is not installed")
    states = module.allocate_inference_cache(batch, context + 1)
    _fill_(states, gen)
    return Workload(lambda: _token(module, batch, gen, (batch,)), lambda u: module.step(u, *states), nbytes(states))


def _token(module: nn.Module, batch: int, gen: torch.Generator, lead: tuple[int, ...]) -> torch.Tensor:
    """A fresh random input token, `lead` + (d_model,), in the layer's weight dtype."""
    weight = next(module.parameters())
    return torch.randn(*lead, module.out_proj.out_features, device=weight.device, dtype=weight.dtype, generator=gen)


DECODE_MIXERS = ("mamba2", "mamba1", "attention")


def _none(module: nn.Module, batch: int, context: int, gen: torch.Generator) -> Workload:
    """Mixers without a decode step here (the DeltaNets, Mamba-3's reference): a skipped row."""
    raise CaseSkipped(f"{type(module).__name__} has no single-token decode step in align_mamba")


DECODERS: dict[str, Callable[[nn.Module, int, int, torch.Generator], Workload]] = {
    "recurrent": _recurrent,
    "kv": _kv,
    "mamba3": _mamba3,
    "none": _none,
}


def mixer_decode(module: nn.Module, kind: str, batch: int, context: int, gen: torch.Generator) -> Workload:
    """The decode workload of one mixer layer; kind names how its step is driven (DECODERS)."""
    if kind not in DECODERS:
        raise ConfigError(f"unknown decode kind {kind!r}; known: {', '.join(DECODERS)}")
    workload = DECODERS[kind](module, batch, context, gen)
    return Workload(workload.make_inputs, torch.no_grad()(workload.run), workload.state_bytes)


def cross_attention_cache(module: CrossAttention, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of the memory (B, Lk, D), each (B, H, Lk, Dh), projected once per sequence."""
    batch, length, _ = memory.shape
    kv = module.kv_proj(memory).view(batch, length, 2, module.n_heads, module.head_dim)
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
    return k.contiguous(), v.contiguous()


def cross_attention_step(module: CrossAttention, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor]):
    """CrossAttention.forward for x (B, 1, D) on cached keys/values (cross_attention_cache) → (B, 1, D)."""
    batch = x.shape[0]
    q = module.q_proj(x).view(batch, 1, module.n_heads, module.head_dim).transpose(1, 2)  # (B, H, 1, Dh)
    y = F.scaled_dot_product_attention(q, *cache)
    return module.out_proj(y.transpose(1, 2).reshape(batch, 1, -1))


def _mixer_step(mixer: nn.Module, x: torch.Tensor, cache, position: int) -> torch.Tensor:
    if isinstance(mixer, SelfAttention):
        return mixer.step(x, cache, position)
    return mixer.step(x, *cache)[0]


def decoder_blocks(model: RecallModel) -> nn.ModuleList:
    """The blocks a decode step runs: the hybrid's decoder, or the decoder-only model's layers."""
    return model.decoder if isinstance(model, HybridEncoderDecoder) else model.layers


def decoder_caches(
    model: RecallModel, batch: int, max_len: int, dtype: torch.dtype, memory: torch.Tensor | None = None
) -> list[dict]:
    """Per decoder block: the mixer's zeroed state or KV cache of max_len positions ("mixer") and,
    at cross-attention layers, the keys/values of the encoder `memory` (B, Lc, D) ("cross").
    States are in the compute dtype: the kernels' conv update requires that of its input."""
    caches = []
    for block in decoder_blocks(model):
        cross = getattr(block, "cross_attention", None)
        caches.append(
            {
                "mixer": block.mixer.allocate_inference_cache(batch, max_len, dtype=dtype),
                "cross": cross_attention_cache(cross, memory) if cross is not None else None,
            }
        )
    return caches


def model_step(model: RecallModel, caches: list[dict], token: torch.Tensor, position: int) -> torch.Tensor:
    """The token (B, 1) at `position` through the embedding, every decoder block's step (caches
    updated in place) and the vocabulary head → logits (B, 1, V)."""
    x = model.embedding(token)  # (B, 1, D)
    for block, cache in zip(decoder_blocks(model), caches):
        x = x + _mixer_step(block.mixer, block.norm(x), cache["mixer"], position)
        if cache["cross"] is not None:
            x = x + cross_attention_step(block.cross_attention, block.cross_norm(x), cache["cross"])
        if getattr(block, "mlp", None) is not None:
            x = x + block.mlp(block.mlp_norm(x))
    return model.lm_head(model.norm_f(x))


def architecture_decode(
    model: RecallModel, batch: int, context: int, dtype: torch.dtype, gen: torch.Generator
) -> Workload:
    """One token at position Lc after a context of Lc: (B, 1) → logits (B, 1, V). Random states,
    KV caches and (hybrid) encoder memory stand for those the context would have left."""
    # Decode steps exist for the Mamba-1/2 and attention blocks of these two model classes only.
    if not isinstance(model, (DecoderLM, HybridEncoderDecoder)) or model.config.mixer not in DECODE_MIXERS:
        raise CaseSkipped(f"variant {model.config.variant} has no single-token decode step in align_mamba")
    weight = model.embedding.weight
    memory = None
    if isinstance(model, HybridEncoderDecoder):
        memory = torch.randn(batch, context, weight.shape[1], device=weight.device, dtype=dtype, generator=gen)
    with torch.no_grad(), autocast(weight.device, dtype):
        caches = decoder_caches(model, batch, context + 1, dtype, memory)
    for block, cache in zip(decoder_blocks(model), caches):
        states = cache["mixer"]
        _fill_([c[:, :, :context] for c in states] if isinstance(block.mixer, SelfAttention) else states, gen)

    def step(token: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), autocast(weight.device, dtype):
            return model_step(model, caches, token, context)

    def token() -> torch.Tensor:
        return torch.randint(10, model.config.vocab_size, (batch, 1), device=weight.device, generator=gen)

    state_bytes = sum(nbytes(c["mixer"]) + (nbytes(c["cross"]) if c["cross"] else 0) for c in caches)
    return Workload(token, step, state_bytes)
