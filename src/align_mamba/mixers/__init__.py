"""Sequence mixers: Mamba-2, Mamba-1, Mamba-3 (mamba-ssm kernels or the pure-PyTorch reference),
DeltaNet and Gated DeltaNet (flash-linear-attention kernels or the reference) and attention."""

from align_mamba.mixers.attention import CrossAttention, SelfAttention
from align_mamba.mixers.delta import DeltaNet, DeltaNetMixer, GatedDeltaNet
from align_mamba.mixers.mamba1 import Mamba, MambaReference
from align_mamba.mixers.mamba2 import Mamba2, Mamba2Reference
from align_mamba.mixers.mamba3 import Mamba3, Mamba3Reference

__all__ = [
    "CrossAttention",
    "DeltaNet",
    "DeltaNetMixer",
    "GatedDeltaNet",
    "Mamba",
    "Mamba2",
    "Mamba2Reference",
    "Mamba3",
    "Mamba3Reference",
    "MambaReference",
    "SelfAttention",
]
