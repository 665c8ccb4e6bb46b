"""Skip tests marked `gpu` unless CUDA and mamba-ssm's kernels can run here."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    from align_mamba.backends import mamba_ssm_status

    reason = mamba_ssm_status()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs CUDA and mamba-ssm: {reason}")
    for item in gpu_items:
        item.add_marker(skip)
