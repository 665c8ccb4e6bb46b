"""What the blocks need to build a mixer: one small spec both studies fill from their own configs.

The studies validate their settings at their boundary (recall.config.ModelConfig,
secrets.tagger.TaggerConfig); the spec carries the checked values to the blocks and adds the
backend resolved for this run, so the blocks depend on no study's config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from align_mamba.core.params import require

# Recurrent mixers, each with kernels on GPU and a pure-PyTorch reference: Mamba-2, Mamba-1, Mamba-3
# (mamba-ssm), Gated DeltaNet and DeltaNet (flash-linear-attention).
SSM_MIXERS = ("mamba2", "mamba1", "mamba3", "gated_deltanet", "deltanet")
# Those that split expand·d_model channels into heads of `headdim`.
HEADDIM_MIXERS = ("mamba2", "mamba3", "gated_deltanet", "deltanet")


def require_headdim_fits(d_model: int, expand: int, headdim: int) -> None:
    """Mamba-2/3 and the DeltaNets split expand·d_model channels into heads of `headdim`: they must divide evenly."""
    d_inner = expand * d_model
    require(
        d_inner % headdim == 0,
        f"expand*d_model ({d_inner}) must be divisible by headdim ({headdim}); try headdim={math.gcd(d_inner, 64)}",
    )


@dataclass(frozen=True)
class MixerSpec:
    """Settings of the mixers and blocks of one model.

    d_model: residual width; d_state, headdim, expand, d_conv, chunk_size: the Mamba mixers'
    (headdim and chunk_size not Mamba-1's; d_state is the key size per head of the DeltaNets); ssm:
    the recurrent mixer of bidirectional and hybrid blocks (one of SSM_MIXERS); n_heads: attention heads; mlp_ratio: the Transformer MLP's width
    over d_model; backend: "kernels" | "reference" (resolved, not "auto") for the Mamba mixers.
    """

    d_model: int
    d_state: int = 64
    headdim: int = 32
    expand: int = 2
    d_conv: int = 4
    chunk_size: int = 64
    n_heads: int = 4
    ssm: str = "mamba2"
    mlp_ratio: int = 4
    backend: str = "reference"

    @classmethod
    def of(cls, settings: Any, backend: str) -> MixerSpec:
        """The spec of a study's validated config: its fields of these names, and the run's backend."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if f.name != "backend"}, backend=backend)
