"""The new grid variants (mamba3, gated_deltanet, deltanet, zamba, polar_mem) on the CPU reference:
they build from a ModelConfig, train a step, report a state size, round-trip a checkpoint, and
enter the params tree like the old ones."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml

from align_mamba.core.errors import ConfigError
from align_mamba.recall.config import VARIANTS, ModelConfig
from align_mamba.recall.models import build_model, state_size_floats
from align_mamba.recall.params import build_recall_params

NEW_VARIANTS = ["mamba3", "gated_deltanet", "deltanet", "zamba", "polar_mem"]
SMALL = dict(
    d_model=32,
    d_state=8,
    headdim=16,
    chunk_size=8,
    n_heads=2,
    encoder_layers=1,
    n_layers=3,
    vocab_size=64,
    mem_pool_size=5,
    mem_summary_dim=8,
    mem_update_freq=2,
)
TINY_PRESET = Path(__file__).resolve().parents[1] / "workflow" / "presets" / "tiny.yaml"


def _model(variant, **overrides):
    torch.manual_seed(0)
    return build_model(ModelConfig(variant=variant, **{**SMALL, **overrides}), "reference")


def _batch(model, batch=2, length=12):
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randint(10, 64, (batch, length), generator=gen)
    context = torch.randint(10, 64, (batch, 20), generator=gen) if model.config.layout == "seq2seq" else None
    return inputs, context


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_variant_trains_on_the_reference_and_reports_a_state_size(variant):
    model = _model(variant)
    inputs, context = _batch(model)
    queries = torch.tensor([[3, 7], [5, 11]])
    logits = model(inputs, queries, context)
    assert logits.shape == (4, 64)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 3, 4])).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"
    sizes = state_size_floats(model.config, context_len=20)
    assert sizes["total"] > 0 and sizes["ssm"] > 0 and sizes["total"] == sizes["ssm"] + sizes["attention"]


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_state_dict_round_trip_gives_identical_outputs(variant):
    model = _model(variant).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    torch.manual_seed(123)  # a different init, then the saved weights over it
    other = build_model(model.config, "reference").eval()
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))
    inputs, context = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(
            other.hidden_states(inputs, context), model.hidden_states(inputs, context), rtol=0, atol=0
        )


@pytest.mark.parametrize("variant", ["mamba3", "gated_deltanet", "deltanet", "zamba"])
def test_decoder_variants_are_causal(variant):
    model = _model(variant).eval()
    inputs, _ = _batch(model)
    changed = inputs.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 64
    with torch.no_grad():
        before, after = model.hidden_states(inputs, None), model.hidden_states(changed, None)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_state_sizes_follow_the_accounting():
    floats = 2 * 32 * 8  # expand·d_model·d_state
    for variant in ("mamba3", "gated_deltanet", "deltanet"):
        assert state_size_floats(ModelConfig(variant=variant, **SMALL), 20) == {
            "ssm": 3 * floats,
            "attention": 0,
            "total": 3 * floats,
        }
    zamba = ModelConfig(variant="zamba", **{**SMALL, "n_layers": 4})  # shared attention after layers 1 and 3
    assert zamba.shared_attention_layers == (1, 3)
    assert state_size_floats(zamba, 20) == {
        "ssm": 4 * floats,
        "attention": 2 * 2 * 32 * 20,
        "total": 4 * floats + 2 * 2 * 32 * 20,
    }
    polar = ModelConfig(variant="polar_mem", **SMALL)
    assert polar.hybrid_positions == (0, 2)  # GSA at (0, 2) by default
    ssm = 3 * (floats + 32) + 5 * 8  # + the A=1 running sum per layer + the memory pool
    assert state_size_floats(polar, 20) == {"ssm": ssm, "attention": 2 * 2 * 32 * 20, "total": ssm + 2 * 2 * 32 * 20}


def test_zamba_shares_one_attention_block():
    model = _model("zamba", n_layers=4, shared_attention_every=2)
    attention_modules = [m for m in model.modules() if type(m).__name__ == "SelfAttention"]
    assert len(attention_modules) == 1 and len(model.shared_out) == 2


def test_polar_mem_defaults_and_needs_a_context():
    config = ModelConfig(variant="polar_mem", n_layers=4)
    assert (config.mem_pool_size, config.mem_summary_dim, config.mem_update_freq) == (50, 64, 4)
    assert config.layout == "seq2seq" and config.label == "polar_mem-0_2"
    assert ModelConfig(variant="polar_mem", n_layers=2).hybrid_positions == (0,)  # the defaults below n_layers
    model = _model("polar_mem")
    assert sorted(model.gsa) == ["0", "2"]
    with pytest.raises(ConfigError, match="needs the encoder context"):
        model(torch.randint(10, 64, (1, 4)), torch.ones(1, 4, dtype=torch.bool))


def test_unknown_variant_fails_with_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as err:
        ModelConfig(variant="mamba4")
    message = str(err.value)
    assert "\n" not in message and all(v in message for v in VARIANTS)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"variant": "zamba", "n_layers": 2, "shared_attention_every": 3}, "must be <= n_layers"),
        ({"variant": "zamba", "hybrid_positions": (0,)}, "decoder-only"),
        ({"variant": "mamba3", "d_state": 12}, "d_state a multiple of 8"),
        ({"variant": "gated_deltanet", "d_model": 48, "headdim": 64}, "divisible by headdim"),
        ({"variant": "deltanet", "d_state": 512}, "d_state must be <= 256"),
        ({"variant": "polar_mem", "mem_pool_size": 0}, "mem_pool_size must be > 0"),
        ({"variant": "polar_mem", "n_layers": 2, "hybrid_positions": (3,)}, "outside [0, n_layers"),
    ],
)
def test_new_fields_are_validated(values, fragment):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**values)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_params_tree_takes_the_new_variants_and_their_model_overrides():
    raw = yaml.safe_load(TINY_PRESET.read_text())
    raw["architectures"] += [
        {"name": "gdn", "variant": "gated_deltanet"},
        {"name": "zamba-3", "variant": "zamba", "model": {"shared_attention_every": 3}},
        {"name": "polar", "variant": "polar_mem", "model": {"mem_pool_size": 8, "mem_update_freq": 2}},
    ]
    raw["experiments"]["cliff"]["architectures"] += ["gdn", "zamba-3", "polar"]
    params = build_recall_params(raw)
    models = {cell.model.name: cell.model for cell in params.cells}
    assert models["zamba-3"].shared_attention_every == 3
    assert (models["polar"].mem_pool_size, models["polar"].mem_update_freq) == (8, 2)
    assert models["polar"].hybrid_positions == (0, 2)
    raw["architectures"].append({"name": "bad", "variant": "mamba4"})
    raw["experiments"]["cliff"]["architectures"].append("bad")
    with pytest.raises(ConfigError) as err:
        build_recall_params(raw)
    assert "mamba4" in str(err.value) and "gated_deltanet" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def mqar4(tmp_path_factory) -> Path:
    from align_mamba.recall.mqar import MQARConfig
    from align_mamba.recall.storage import write_mqar

    out = tmp_path_factory.mktemp("data") / "np4"
    write_mqar(
        MQARConfig(num_pairs=4, seq_len=16, num_queries=None, train_size=64, val_size=16, test_size=32, seed=0), out
    )
    return out


@pytest.mark.parametrize("variant", NEW_VARIANTS)
def test_cell_trains_and_its_metrics_record_the_state_size(variant, mqar4, tmp_path):
    import json

    from align_mamba.recall.config import CellConfig, TrainConfig
    from align_mamba.recall.evaluate import evaluate_cell
    from align_mamba.recall.metrics import CellMetrics
    from align_mamba.recall.train import train_cell

    model = ModelConfig(variant=variant, **{**SMALL, "vocab_size": 8192, "n_layers": 3})
    cell = CellConfig(
        model, TrainConfig(steps=4, batch_size=8, eval_every=2, checkpoint_every=2, device="cpu", backend="auto")
    )
    summary = train_cell(cell, mqar4, tmp_path / "run")
    assert summary["backend"] == "reference"
    metrics = CellMetrics.from_json(
        json.loads(json.dumps(evaluate_cell(tmp_path / "run" / "model.pt", [mqar4], "reference", "cpu", 16)))
    )
    assert metrics.state_size.total > 0 and metrics.cell.model.variant == variant
    if model.layout == "decoder":  # the context is the whole decoder-layout sequence, seq_len 16
        assert metrics.state_size.total == state_size_floats(model, 16)["total"]
