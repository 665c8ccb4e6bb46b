"""What every MQAR model shares: token embedding, final norm, and a tied vocabulary head that is
applied only where a prediction is scored."""

from __future__ import annotations

import math

import torch
from torch import nn

from align_mamba.recall.config import ModelConfig


class RecallModel(nn.Module):
    """Base class. Subclasses implement `hidden_states(inputs, context) -> (B, L, D)`."""

    def __init__(self, config: ModelConfig, backend: str):
        super().__init__()
        self.config, self.backend = config, backend
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        # Rows of norm ~2: the tied head then turns a copied value embedding into a logit margin the
        # softmax over 8192 tokens can use from the first steps (std 0.02 left recall stuck).
        nn.init.normal_(self.embedding.weight, std=2 / math.sqrt(config.d_model))
        self.norm_f = nn.RMSNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embedding.weight

    def hidden_states(self, inputs: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, inputs: torch.Tensor, query_mask: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at the scored positions only.

        inputs: (B, L) token ids; query_mask: (B, L) bool, True where a label is scored;
        context: (B, Lc) encoder token ids (hybrid) or None. Returns (Nq, V), Nq = query_mask.sum(),
        rows in row-major order of query_mask. Projecting only these rows onto the 8192-token
        vocabulary is what keeps the head from dominating the step.
        """
        hidden = self.hidden_states(inputs, context)  # (B, L, D)
        return self.lm_head(self.norm_f(hidden[query_mask]))  # (Nq, V)

    def full_logits(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, V) logits at every position: the naive language-model head, for benchmarks."""
        return self.lm_head(self.norm_f(self.hidden_states(inputs, context)))
