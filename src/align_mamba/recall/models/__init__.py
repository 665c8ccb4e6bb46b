"""MQAR architectures, built by variant name, and the state size each one carries."""

from __future__ import annotations

from align_mamba.core.errors import ConfigError
from align_mamba.recall.config import DECODER_VARIANTS, ModelConfig
from align_mamba.recall.models.decoder_lm import DecoderLM
from align_mamba.recall.models.encoder_decoder import HybridEncoderDecoder
from align_mamba.recall.models.polar_mem import PolarMemEncoderDecoder
from align_mamba.recall.models.recall_model import RecallModel
from align_mamba.recall.models.zamba import ZambaLM

ARCHITECTURES: dict[str, type[RecallModel]] = {
    **{variant: DecoderLM for variant in DECODER_VARIANTS},
    "zamba": ZambaLM,
    "hybrid": HybridEncoderDecoder,
    "polar_mem": PolarMemEncoderDecoder,
}


def build_model(config: ModelConfig, backend: str) -> RecallModel:
    """The model for `config.variant`, its recurrent mixers on `backend` ("kernels" | "reference")."""
    if config.variant not in ARCHITECTURES:
        raise ConfigError(f"unknown variant {config.variant!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[config.variant](config, backend)


def state_size_floats(config: ModelConfig, context_len: int) -> dict[str, int]:
    """Floats a model keeps about the context when it answers a query (Zoology's accounting).

    A recurrent layer keeps expand·d_model·d_state: Mamba-1/2/3's SSM state, and the DeltaNets'
    (d_state × headdim) matrix per head over expand·d_model/headdim heads (Mamba-3's carried B_t, x_t
    and rotary angles, like the Mambas' convolution window, are not counted). A self-attention layer
    keeps a KV cache of 2·d_model·context_len; a cross-attention layer reads the encoder's
    2·d_model·context_len. zamba: each use of its shared attention keeps its own KV cache.
    polar_mem: per decoder layer the SSM path's state plus the A=1 channel's running sum (d_model;
    the A=0 channel keeps nothing), the memory pool's mem_pool_size·mem_summary_dim, and its gated
    shortcut attention at hybrid_positions reading the encoder.
    """
    ssm_layer = config.expand * config.d_model * config.d_state
    kv = 2 * config.d_model * context_len
    if config.mixer == "attention":
        return {"ssm": 0, "attention": config.n_layers * kv, "total": config.n_layers * kv}
    if config.variant == "zamba":
        ssm, attention = config.n_layers * ssm_layer, len(config.shared_attention_layers) * kv
        return {"ssm": ssm, "attention": attention, "total": ssm + attention}
    if config.variant == "polar_mem":
        ssm = config.n_layers * (ssm_layer + config.d_model) + config.mem_pool_size * config.mem_summary_dim
        attention = len(config.hybrid_positions) * kv
        return {"ssm": ssm, "attention": attention, "total": ssm + attention}
    if config.variant in DECODER_VARIANTS:
        attention_layers = sum(config.layer_mixer(i) == "attention" for i in range(config.n_layers))
        ssm, attention = (config.n_layers - attention_layers) * ssm_layer, attention_layers * kv
        return {"ssm": ssm, "attention": attention, "total": ssm + attention}
    ssm = config.n_layers * ssm_layer
    attention = len(config.hybrid_positions) * kv
    return {"ssm": ssm, "attention": attention, "total": ssm + attention}


__all__ = [
    "ARCHITECTURES",
    "DecoderLM",
    "HybridEncoderDecoder",
    "PolarMemEncoderDecoder",
    "RecallModel",
    "ZambaLM",
    "build_model",
    "state_size_floats",
]
