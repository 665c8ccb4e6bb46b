"""Hybrid encoder-decoder over the seq2seq MQAR layout.

A bidirectional Mamba encoder reads `BOS k1 SEP v1 … EOS`; the Mamba decoder reads `BOS q1 … qM`
and can reach the pairs only through cross-attention at the layers in `hybrid_positions`.
Without layer 0 the first decoder layers run "blind": their Mamba state has seen only queries.
"""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.core.errors import ConfigError
from align_mamba.mixers.blocks import BidirectionalBlock, HybridDecoderBlock
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models.recall_model import RecallModel


class HybridEncoderDecoder(RecallModel):
    def __init__(self, config: ModelConfig, backend: str):
        super().__init__(config, backend)
        spec = config.mixer_spec(backend)
        self.encoder = nn.ModuleList(BidirectionalBlock(spec) for _ in range(config.encoder_layers))
        self.encoder_norm = nn.RMSNorm(config.d_model)
        positions = set(config.hybrid_positions)
        self.decoder = nn.ModuleList(
            HybridDecoderBlock(spec, cross_attention=i in positions) for i in range(config.n_layers)
        )

    def encode(self, context: torch.Tensor) -> torch.Tensor:
        """context: (B, Lc) → memory (B, Lc, D)."""
        x = self.embedding(context)
        for layer in self.encoder:
            x = layer(x)
        return self.encoder_norm(x)

    def hidden_states(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """inputs: (B, Lq) decoder ids, context: (B, Lc) encoder ids → (B, Lq, D)."""
        if context is None:
            raise ConfigError("the hybrid encoder-decoder needs the encoder context (seq2seq layout)")
        memory = self.encode(context)
        x = self.embedding(inputs)
        for layer in self.decoder:
            x = layer(x, memory)
        return x
