"""Skip tests marked `gpu` unless CUDA and mamba-ssm's kernels can run here."""

from __future__ import annotations

import os

import pytest

# Parity tests compare kernels with the float32 reference: make mamba-ssm's Triton kernels compute
# float32 dot products in IEEE float32, not TF32 (whose 10-bit mantissa alone moves the per-head
# dt_bias/A_log gradients by ~1e-3). Set before any kernel compiles; training is unaffected.
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

# A GPU test's first call compiles and autotunes Triton kernels for minutes. One stuck beyond this
# fails with its stack (pytest-timeout), and the run goes on to print every failure, instead of an
# outer time limit killing pytest before its summary.
GPU_TEST_TIMEOUT_S = 300


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    from align_mamba.core.backends import mamba_ssm_status

    reason = mamba_ssm_status()
    if reason is None:
        if config.pluginmanager.hasplugin("timeout"):
            for item in gpu_items:
                if item.get_closest_marker("timeout") is None:
                    item.add_marker(pytest.mark.timeout(GPU_TEST_TIMEOUT_S))
        return
    skip = pytest.mark.skip(reason=f"needs CUDA and mamba-ssm: {reason}")
    for item in gpu_items:
        item.add_marker(skip)
