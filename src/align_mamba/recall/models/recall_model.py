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

    def forward(
        self, inputs: torch.Tensor, queries: torch.Tensor | slice, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits at the scored positions only.

        inputs: (B, L) token ids; context: (B, Lc) encoder token ids (hybrid) or None.
        queries, the scored positions, one of:
          slice             the same positions in every row (seq2seq: every decoder position after BOS);
          (B, M) int64      each row's M positions, ascending (decoder layout);
          (B, L) bool mask  True where a label is scored.
        Returns (Nq, V) rows in row-major order of the positions (Nq = B·M, or the mask's count).
        A slice or index tensor has a shape known without reading device values, so the step needs
        no host sync (a boolean mask must count its Trues first). Projecting only these rows onto
        the 8192-token vocabulary is what keeps the head from dominating the step.
        """
        hidden = self.hidden_states(inputs, context)  # (B, L, D)
        if isinstance(queries, slice):
            picked = hidden[:, queries].flatten(0, 1)
        elif queries.dtype == torch.bool:
            picked = hidden[queries]
        else:
            picked = hidden.gather(1, queries[..., None].expand(-1, -1, hidden.shape[-1])).flatten(0, 1)
        return self.lm_head(self.norm_f(picked))  # (Nq, V)

    def full_logits(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, V) logits at every position: the naive language-model head, for benchmarks."""
        return self.lm_head(self.norm_f(self.hidden_states(inputs, context)))
