"""Decoder-only LM over the causal MQAR layout: pure Mamba-2 / Mamba-1 stacks, a Transformer, or a
decoder hybrid (Mamba layers with causal self-attention at `hybrid_positions`, Jamba-style).

For the pure stacks every fact must pass through the recurrent state (the Transformer's through its
KV cache), so accuracy measures raw state capacity. The decoder hybrid is the control for the
encoder-decoder hybrid: attention is present in both, only where it reads from differs.
"""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.core.errors import ConfigError
from align_mamba.mixers.blocks import MixerBlock
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models.recall_model import RecallModel


class DecoderLM(RecallModel):
    def __init__(self, config: ModelConfig, backend: str):
        super().__init__(config, backend)
        spec = config.mixer_spec(backend)
        self.layers = nn.ModuleList(MixerBlock(spec, config.layer_mixer(i)) for i in range(config.n_layers))

    def hidden_states(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """inputs: (B, L) → (B, L, D). A decoder-only model takes no separate context."""
        if context is not None:
            raise ConfigError(f"variant {self.config.variant} is decoder-only and takes no encoder context")
        x = self.embedding(inputs)
        for layer in self.layers:
            x = layer(x)
        return x
