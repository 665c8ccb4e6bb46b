"""Which backend runs: the device and the mixer decide, and what cannot run fails with one line."""

import sys
from functools import lru_cache

import pytest
import torch

import align_mamba.core.backends as backends
from align_mamba.core.backends import resolve_backend
from align_mamba.core.errors import BackendUnavailableError, ConfigError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_kernels_on_a_cpu_device_is_a_config_error_even_where_mamba_ssm_runs(monkeypatch):
    monkeypatch.setattr(backends, "mamba_ssm_status", lambda mixer="mamba2": None)
    assert resolve_backend("auto", CUDA) == "kernels"
    assert resolve_backend("auto", CPU) == "reference"
    with pytest.raises(ConfigError, match="runs only on device cuda"):
        resolve_backend("kernels", CPU)


def test_mamba1_needs_the_compiled_scan(monkeypatch):
    monkeypatch.setattr(backends.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "optional_module", lambda name: object() if name == "mamba_ssm" else None)
    assert resolve_backend("auto", CUDA, "mamba2") == "kernels"
    assert resolve_backend("auto", CUDA, "mamba1") == "reference"
    with pytest.raises(BackendUnavailableError, match="selective_scan_cuda.*install with: pip install"):
        resolve_backend("kernels", CUDA, "mamba1")


def test_attention_only_models_report_sdpa_and_names_are_checked():
    assert resolve_backend("kernels", CPU, "attention") == "sdpa"
    with pytest.raises(ConfigError, match="backend must be one of auto, kernels, reference"):
        resolve_backend("triton", CPU, "attention")


@pytest.mark.parametrize("compiled", [True, False], ids=["extension-present", "extension-missing"])
def test_causal_conv1d_counts_only_with_the_compiled_functions_mamba_ssm_imports(
    compiled, tmp_path, monkeypatch, request
):
    """A package whose CUDA extension is missing (or half-installed) must not select the fused path."""
    names = ("causal_conv1d", "causal_conv1d.cpp_functions")

    def forget_the_fake_package():
        for name in names:
            if str(tmp_path) in (getattr(sys.modules.get(name), "__file__", None) or ""):
                del sys.modules[name]

    request.addfinalizer(forget_the_fake_package)
    package = tmp_path / "causal_conv1d"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cpp_functions.py").write_text("" if compiled else "import causal_conv1d_cuda_not_built\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(backends, "optional_module", lru_cache(backends.optional_module.__wrapped__))  # empty cache
    assert backends.optional_module("causal_conv1d") is not None
    assert backends.has_causal_conv1d() is compiled
