"""Polar-Mem-Mamba over the seq2seq MQAR layout (mixers/polar.py holds its pieces).

A bidirectional `ssm` encoder reads the pairs, as in the hybrid. Each decoder layer:
    y = PolarizedMixer(norm(x))                    Mamba-2 path, A=0 and A=1 channels, fused
    pool ← pool.write(y)   at layers 0, f, 2f, …   (f = mem_update_freq)
    x ← x + y + pool.read(y)
    x ← x + GSA(x, x0, encoder output)   at hybrid_positions (default (0, 2))
The pool's writes score every decoder position at once: the decoder reads only query keys (no
answers), so this lets queries see each other, never a label.
"""

from __future__ import annotations

import torch
from torch import nn

from align_mamba.core.errors import ConfigError
from align_mamba.mixers.blocks import BidirectionalBlock
from align_mamba.mixers.polar import GatedShortcutAttention, MemoryPool, PolarizedMixer
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models.encoder_decoder import HybridEncoderDecoder
from align_mamba.recall.models.recall_model import RecallModel


class PolarMemEncoderDecoder(RecallModel):
    def __init__(self, config: ModelConfig, backend: str):
        super().__init__(config, backend)
        spec = config.mixer_spec(backend)
        self.encoder = nn.ModuleList(BidirectionalBlock(spec) for _ in range(config.encoder_layers))
        self.encoder_norm = nn.RMSNorm(config.d_model)
        self.norms = nn.ModuleList(nn.RMSNorm(config.d_model) for _ in range(config.n_layers))
        self.decoder = nn.ModuleList(PolarizedMixer(spec) for _ in range(config.n_layers))
        self.memory = MemoryPool(config.d_model, config.mem_pool_size, config.mem_summary_dim)
        self.gsa = nn.ModuleDict({str(i): GatedShortcutAttention(spec) for i in config.hybrid_positions})

    # The hybrid's encoder, run the same way on the same parameter names (embedding, encoder, encoder_norm)
    encode = HybridEncoderDecoder.encode

    def hidden_states(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """inputs: (B, Lq) decoder ids, context: (B, Lc) encoder ids → (B, Lq, D)."""
        if context is None:
            raise ConfigError("polar_mem is an encoder-decoder: it needs the encoder context (seq2seq layout)")
        memory = self.encode(context)
        x0 = self.embedding(inputs)
        x, pool = x0, self.memory.empty(inputs.shape[0])
        for i, (norm, mixer) in enumerate(zip(self.norms, self.decoder)):
            y = mixer(norm(x))
            if i % self.config.mem_update_freq == 0:
                pool = self.memory.write(pool, y)
            x = x + y + self.memory.read(pool, y)
            if str(i) in self.gsa:
                x = x + self.gsa[str(i)](x, x0, memory)
        return x
