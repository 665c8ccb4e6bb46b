"""Zamba-style decoder over the causal MQAR layout: an `ssm` stack (Mamba-2 by default) with ONE
attention block whose weights are shared, run after every `shared_attention_every` layers.

The shared block reads the residual stream beside the input embeddings (Zamba's concatenation) and
writes back through a projection of its own at each use. Every use keeps its own KV cache, so the
model holds as many caches as uses but pays the attention's parameters once.
"""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.core.errors import ConfigError
from align_mamba.mixers.blocks import MixerBlock, SharedAttentionBlock
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models.recall_model import RecallModel


class ZambaLM(RecallModel):
    def __init__(self, config: ModelConfig, backend: str):
        super().__init__(config, backend)
        spec = config.mixer_spec(backend)
        self.layers = nn.ModuleList(MixerBlock(spec, config.mixer) for _ in range(config.n_layers))
        self.shared = SharedAttentionBlock(spec)
        self.shared_layers = config.shared_attention_layers
        self.shared_out = nn.ModuleList(
            nn.Linear(config.d_model, config.d_model, bias=False) for _ in self.shared_layers
        )

    def hidden_states(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """inputs: (B, L) → (B, L, D)."""
        if context is not None:
            raise ConfigError(f"variant {self.config.variant} is decoder-only and takes no encoder context")
        x0 = self.embedding(inputs)
        x, use = x0, 0
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.shared_layers:
                x = x + self.shared_out[use](self.shared(x, x0))
                use += 1
        return x
