"""The typed config rejects every bad cell with one line that names the field."""

import pytest

from align_mamba.core.errors import ConfigError
from align_mamba.core.params import from_mapping
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"variant": "mamba3000"}, "variant must be one of"),
        ({"variant": "hybrid", "hybrid_positions": (0, 4), "n_layers": 4}, "outside [0, n_layers=4)"),
        ({"variant": "hybrid", "hybrid_positions": (-1,)}, "outside [0, n_layers"),
        ({"variant": "hybrid", "hybrid_positions": (0, 0)}, "duplicates"),
        ({"variant": "hybrid", "hybrid_positions": ()}, "hybrid_positions [] is the decoder-only model"),
        ({"variant": "mamba2", "hybrid_positions": (0,)}, "decoder-only"),
        ({"d_state": 0}, "d_state must be > 0"),
        ({"d_model": 48, "headdim": 64}, "must be divisible by headdim"),
        ({"d_model": 66, "n_heads": 4}, "divisible by n_heads"),
        ({"variant": "hybrid", "hybrid_positions": (0,), "ssm": "s4"}, "ssm must be one of"),
    ],
)
def test_model_config_rejects(values, fragment):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**values)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_blind_start_positions_fit_a_deep_decoder():
    config = ModelConfig(variant="hybrid", hybrid_positions=(8, 16), n_layers=18)
    assert config.layout == "seq2seq" and config.mixer == "mamba2"
    with pytest.raises(ConfigError, match="raise n_layers to at least 17"):
        ModelConfig(variant="hybrid", hybrid_positions=(8, 16), n_layers=16)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"lr": "1e-3"}, "train.lr must be a finite number, got '1e-3' (str)"),
        ({"steps": 10.5}, "train.steps must be int"),
        ({"steps": True}, "train.steps must be int"),
        ({"backend": "cuda-please"}, "backend must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"target_accuracy": 1.5}, "target_accuracy must be in (0, 1]"),
        ({"stepz": 3}, "unknown key(s) in train: stepz"),
    ],
)
def test_train_config_rejects(values, fragment):
    with pytest.raises(ConfigError) as err:
        from_mapping(TrainConfig, values, "train")
    assert fragment in str(err.value)


def test_from_mapping_accepts_yaml_lists_and_ints_for_floats():
    model = from_mapping(ModelConfig, {"variant": "hybrid", "hybrid_positions": [0, 2], "n_layers": 4}, "model")
    train = from_mapping(TrainConfig, {"lr": 1, "steps": 5}, "train")
    assert model.hybrid_positions == (0, 2) and train.lr == 1
    assert CellConfig(model, train).model is model
