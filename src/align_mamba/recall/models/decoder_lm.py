"""Decoder-only LM over the causal MQAR layout: pure Mamba-2 / Mamba-1 stacks or a Transformer.

This is `hybrid_positions: []`: every fact must pass through the recurrent state (or, for the
Transformer, the KV cache), so accuracy here measures raw state capacity.
"""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.recall.config import ModelConfig
from align_mamba.core.errors import ConfigError
from align_mamba.mixers.blocks import MixerBlock
from align_mamba.recall.models.recall_model import RecallModel


class DecoderLM(RecallModel):
    def __init__(self, config: ModelConfig, backend: str):
        super().__init__(config, backend)
        spec = config.mixer_spec(backend)
        self.layers = nn.ModuleList(MixerBlock(spec, config.mixer) for _ in range(config.n_layers))

    def hidden_states(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """inputs: (B, L) → (B, L, D). A decoder-only model takes no separate context."""
        if context is not None:
            raise ConfigError(f"variant {self.config.variant} is decoder-only and takes no encoder context")
        x = self.embedding(inputs)
        for layer in self.layers:
            x = layer(x)
        return x
