"""The byte tagger's scan path on mamba-ssm's kernels (CUDA only; skipped elsewhere by conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from align_mamba.secrets.infer import decode_spans, predict_bytes, predict_spans
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _kernel_tagger() -> ByteTagger:
    torch.manual_seed(0)
    model = ByteTagger(TaggerConfig(d_model=64, n_layers=2, d_state=16, headdim=32, chunk_size=64), "kernels", 5)
    torch.nn.init.normal_(model.embedding.weight, std=3.0)  # an untrained model that flags many bytes
    return model.to(CUDA).eval()


def test_gpu_scan_finds_the_spans_of_the_dense_probabilities():
    model = _kernel_tagger()
    data = np.random.default_rng(0).integers(32, 127, 50_000).astype(np.uint8).tobytes()
    dense = predict_bytes(model, data, CUDA, chunk_len=4096, overlap=256, batch_chunks=4)
    expected = decode_spans(dense, threshold=0.6, min_len=2, class_names=model.class_names)
    assert len(expected) > 20
    assert predict_spans(model, data, CUDA, 4096, 256, batch_chunks=4, threshold=0.6, min_len=2) == expected


def test_kernel_tagger_matches_the_reference_on_the_same_weights():
    model = _kernel_tagger()
    reference = ByteTagger(model.config, "reference", 5).to(CUDA).eval()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (2, 1000), device=CUDA)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).softmax(-1), reference(ids).softmax(-1), rtol=0, atol=2e-3)
