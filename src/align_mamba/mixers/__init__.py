"""Sequence mixers: Mamba-2, Mamba-1, Mamba-3 (mamba-ssm kernels or the pure-PyTorch reference),
DeltaNet and Gated DeltaNet (flash-linear-attention kernels or the reference) and attention.

The classes load on first use: a job that only validates settings (`mixers.spec`) or decides that
no rerun is needed imports this package without paying for torch.
"""

from importlib import import_module

# name -> module that defines it
_HOMES = {
    "CrossAttention": "attention",
    "SelfAttention": "attention",
    "DeltaNet": "delta",
    "DeltaNetMixer": "delta",
    "GatedDeltaNet": "delta",
    "Mamba": "mamba1",
    "MambaReference": "mamba1",
    "Mamba2": "mamba2",
    "Mamba2Reference": "mamba2",
    "Mamba3": "mamba3",
    "Mamba3Reference": "mamba3",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
