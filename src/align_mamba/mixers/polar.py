"""Polar-Mem-Mamba's pieces: polarized channels, the cross-layer memory pool, gated shortcut attention.

From the design of Polar-Mem-Mamba (three answers to three ways a selective SSM forgets):
  - polarized channels (recency): beside the `ssm` mixer, an A=0 channel (h_t = B x_t: the current
    token only, no memory) and an A=1 channel (h_t = h_{t-1} + B x_t: a running sum that never
    decays), fused by one linear layer;
  - a memory pool (loss across layers): `pool_size` summaries of `summary_dim` floats carried from
    layer to layer; every few layers tokens are scored and the best replace the lowest-priority
    entries (top-k on learned priorities), and every layer reads the pool through attention and a
    learned sigmoid gate;
  - gated shortcut attention (state overflow): at a few layers, [x, x0] (the residual beside the
    decoder's input embeddings) is projected to a query that cross-attends to the encoder output,
    its result gated into the residual.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from align_mamba.mixers.attention import CrossAttention
from align_mamba.mixers.blocks import make_mixer
from align_mamba.mixers.spec import MixerSpec


def zero_decay_path(proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The A=0 channel: h_t = 0·h_{t-1} + W x_t, i.e. W x_t. x: (B, L, D) → (B, L, D_out)."""
    return proj(x)


def unit_decay_path(proj: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The A=1 channel: h_t = h_{t-1} + W x_t, i.e. the running sum of W x_s over s <= t.

    x: (B, L, D) → (B, L, D_out); summed in float32 at least (a long bf16 cumsum drifts).
    """
    h = proj(x)
    return torch.cumsum(h.to(torch.promote_types(h.dtype, torch.float32)), dim=1).to(h.dtype)


class PolarizedMixer(nn.Module):
    """fusion([ssm(x), A=0 channel, A=1 channel]): (B, L, D) → (B, L, D); spec.ssm is the SSM path."""

    def __init__(self, spec: MixerSpec):
        super().__init__()
        d = spec.d_model
        self.ssm = make_mixer(spec, spec.ssm)
        self.zero_proj = nn.Linear(d, d, bias=False)
        self.one_proj = nn.Linear(d, d, bias=False)
        self.fusion = nn.Linear(3 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = [self.ssm(x), zero_decay_path(self.zero_proj, x), unit_decay_path(self.one_proj, x)]
        return self.fusion(torch.cat(paths, dim=-1))


class MemoryPool(nn.Module):
    """A pool of `pool_size` entries (value (S,), priority) shared by all decoder layers.

    State: values (B, P, S) and priorities (B, P), starting from learned `initial` values and
    `priority` scores. Stored values are gated by sigmoid(priority), so the priorities and write
    scores get gradients through what is read, not only through the (discrete) selection.
    """

    def __init__(self, d_model: int, pool_size: int = 50, summary_dim: int = 64):
        super().__init__()
        self.pool_size, self.summary_dim = pool_size, summary_dim
        self.initial = nn.Parameter(torch.randn(pool_size, summary_dim) * 0.02)
        self.priority = nn.Parameter(torch.zeros(pool_size))
        self.score_proj = nn.Linear(d_model, 1)  # write gate: a token's importance
        self.write_proj = nn.Linear(d_model, summary_dim, bias=False)
        self.read_proj = nn.Linear(d_model, summary_dim, bias=False)
        self.read_out = nn.Linear(summary_dim, d_model, bias=False)
        self.out_gate = nn.Linear(d_model, d_model)  # read gate

    def empty(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pool before the first write: values (B, P, S), priorities (B, P)."""
        values = torch.sigmoid(self.priority)[:, None] * self.initial
        return values.expand(batch, -1, -1), self.priority.expand(batch, -1)

    @staticmethod
    def select(
        values: torch.Tensor,
        priorities: torch.Tensor,
        new_values: torch.Tensor,
        new_priorities: torch.Tensor,
        keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The `keep` highest-priority entries of pool ∪ candidates, best first.

        values (B, P, S), priorities (B, P), new_values (B, L, S), new_priorities (B, L)
        → values (B, keep, S), priorities (B, keep).
        """
        all_values = torch.cat([values, new_values], dim=1)
        all_priorities = torch.cat([priorities, new_priorities], dim=1)
        index = all_priorities.topk(keep, dim=1).indices  # (B, keep), sorted by priority
        kept = all_values.gather(1, index[..., None].expand(-1, -1, all_values.shape[-1]))
        return kept, all_priorities.gather(1, index)

    def write(self, pool: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every token of y (B, L, D); the top ones replace the lowest-priority entries."""
        scores = self.score_proj(y).squeeze(-1).to(pool[1].dtype)  # (B, L)
        candidates = (torch.sigmoid(scores)[..., None] * self.write_proj(y)).to(pool[0].dtype)  # (B, L, S)
        return self.select(*pool, candidates, scores, self.pool_size)

    def read(self, pool: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Attention from y (B, L, D) over the pool's values, gated: → (B, L, D)."""
        values = pool[0].to(y.dtype)
        weights = torch.softmax(self.read_proj(y) @ values.transpose(1, 2) / math.sqrt(self.summary_dim), dim=-1)
        return torch.sigmoid(self.out_gate(y)) * self.read_out(weights @ values)


class GatedShortcutAttention(nn.Module):
    """x + sigmoid(gate([x, x0])) · CrossAttention(shortcut([x, x0]), memory), x0 the input embeddings."""

    def __init__(self, spec: MixerSpec):
        super().__init__()
        d = spec.d_model
        self.norm = nn.RMSNorm(2 * d)
        self.shortcut = nn.Linear(2 * d, d, bias=False)
        self.gate = nn.Linear(2 * d, d)
        self.cross_attention = CrossAttention(d, spec.n_heads)

    def forward(self, x: torch.Tensor, x0: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x, x0: (B, Lq, D), memory: (B, Lk, D) → the residual update (B, Lq, D)."""
        h = self.norm(torch.cat([x, x0], dim=-1))
        return torch.sigmoid(self.gate(h)) * self.cross_attention(self.shortcut(h), memory)
