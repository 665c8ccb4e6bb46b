"""Architectures: what each position can see, logits only at queries, state-size accounting."""

from __future__ import annotations

import pytest
import torch

from align_mamba.core.errors import ConfigError
from align_mamba.recall.config import ModelConfig
from align_mamba.recall.models import build_model, state_size_floats

SMALL = dict(d_model=32, d_state=8, headdim=16, chunk_size=8, n_heads=2, encoder_layers=1)


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**SMALL, **overrides}), "reference").eval()


def _hidden(model, inputs, context=None):
    with torch.no_grad():
        return model.hidden_states(inputs, context)


@pytest.mark.parametrize("variant", ["mamba2", "mamba1", "transformer"])
def test_decoder_only_models_are_causal(variant):
    model = _model(variant=variant)
    inputs = torch.randint(10, 8192, (2, 12))
    changed = inputs.clone()
    changed[:, 7:] = torch.randint(10, 8192, (2, 5))
    before, after = _hidden(model, inputs), _hidden(model, changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_hybrid_encoder_is_bidirectional_and_decoder_reads_it_only_through_cross_attention():
    model = _model(variant="hybrid", hybrid_positions=(1,), n_layers=2)
    context = torch.randint(10, 8192, (2, 10))
    changed = context.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 8192
    memory, memory_changed = model.encode(context), model.encode(changed)
    assert not torch.allclose(memory[:, 0], memory_changed[:, 0]), "the first encoder position sees the last token"
    queries = torch.randint(10, 8192, (2, 5))
    assert not torch.allclose(_hidden(model, queries, context), _hidden(model, queries, changed))
    # Before the first cross-attention layer the decoder is blind to the context.
    with torch.no_grad():
        x = model.embedding(queries)
        first = model.decoder[0](x, memory)
        torch.testing.assert_close(first, model.decoder[0](x, memory_changed))


def test_logits_only_at_query_positions_match_the_full_head():
    model = _model(variant="mamba2")
    inputs = torch.randint(10, 8192, (3, 9))
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, 2], mask[1, 5], mask[1, 8], mask[2, 0] = True, True, True, True
    with torch.no_grad():
        sparse = model(inputs, mask)
        full = model.full_logits(inputs)
    assert sparse.shape == (4, 8192)
    torch.testing.assert_close(sparse, full[mask])


def test_decoder_only_model_refuses_a_context_and_hybrid_requires_one():
    inputs = torch.randint(10, 8192, (1, 4))
    mask = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(ConfigError, match="decoder-only"):
        _model(variant="mamba2")(inputs, mask, inputs)
    with pytest.raises(ConfigError, match="needs the encoder context"):
        _model(variant="hybrid", hybrid_positions=(0,))(inputs, mask)


def test_head_is_tied_to_the_embedding():
    model = _model(variant="transformer")
    assert model.lm_head.weight is model.embedding.weight


def test_state_size_counts_floats_per_layer():
    pure = ModelConfig(variant="mamba2", d_model=64, n_layers=2, d_state=16)
    assert state_size_floats(pure, 256) == {"ssm": 2 * 2 * 64 * 16, "attention": 0, "total": 4096}
    transformer = ModelConfig(variant="transformer", d_model=64, n_layers=2)
    assert state_size_floats(transformer, 256)["total"] == 2 * 2 * 64 * 256
    hybrid = ModelConfig(variant="hybrid", d_model=64, n_layers=4, d_state=16, hybrid_positions=(0, 2), headdim=32)
    sizes = state_size_floats(hybrid, 50)
    assert sizes["ssm"] == 4 * 2 * 64 * 16 and sizes["attention"] == 2 * 2 * 64 * 50
