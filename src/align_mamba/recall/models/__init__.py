"""MQAR architectures, built by variant name, and the state size each one carries."""

from __future__ import annotations

from align_mamba.recall.config import DECODER_VARIANTS, ModelConfig
from align_mamba.recall.models.decoder_lm import DecoderLM
from align_mamba.recall.models.encoder_decoder import HybridEncoderDecoder
from align_mamba.recall.models.recall_model import RecallModel

ARCHITECTURES: dict[str, type[RecallModel]] = {
    **{variant: DecoderLM for variant in DECODER_VARIANTS},
    "hybrid": HybridEncoderDecoder,
}


def build_model(config: ModelConfig, backend: str) -> RecallModel:
    """The model for `config.variant`, its Mamba mixers on `backend` ("kernels" | "reference")."""
    return ARCHITECTURES[config.variant](config, backend)


def state_size_floats(config: ModelConfig, context_len: int) -> dict[str, int]:
    """Floats a model keeps about the context when it answers a query (Zoology's accounting).

    A Mamba layer keeps expand·d_model·d_state; a self-attention layer a KV cache of
    2·d_model·context_len; a cross-attention layer reads the encoder's 2·d_model·context_len.
    """
    ssm_layer = config.expand * config.d_model * config.d_state
    kv = 2 * config.d_model * context_len
    if config.mixer == "attention":
        return {"ssm": 0, "attention": config.n_layers * kv, "total": config.n_layers * kv}
    if config.variant in DECODER_VARIANTS:
        attention_layers = sum(config.layer_mixer(i) == "attention" for i in range(config.n_layers))
        ssm, attention = (config.n_layers - attention_layers) * ssm_layer, attention_layers * kv
        return {"ssm": ssm, "attention": attention, "total": ssm + attention}
    ssm = config.n_layers * ssm_layer
    attention = len(config.hybrid_positions) * kv
    return {"ssm": ssm, "attention": attention, "total": ssm + attention}


__all__ = ["ARCHITECTURES", "DecoderLM", "HybridEncoderDecoder", "RecallModel", "build_model", "state_size_floats"]
