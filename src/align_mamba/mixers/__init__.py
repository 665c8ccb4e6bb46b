"""Sequence mixers: Mamba-2, Mamba-1 (mamba-ssm kernels or the pure-PyTorch reference) and attention."""

from align_mamba.mixers.attention import CrossAttention, SelfAttention
from align_mamba.mixers.mamba1 import Mamba, MambaReference
from align_mamba.mixers.mamba2 import Mamba2, Mamba2Reference

__all__ = ["CrossAttention", "Mamba", "Mamba2", "Mamba2Reference", "MambaReference", "SelfAttention"]
