"""Nothing corrupt passes as good: checksummed checkpoints, finite weights, valid JSON, resume points
that are set aside when broken, and one clear line for each fault (CPU, tiny models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from align_mamba.cli import main as cli_main
from align_mamba.core.atomic import atomic_write_json
from align_mamba.core.checkpoint import CHECKSUM_KEY, load_checkpoint, payload_digest, save_checkpoint
from align_mamba.core.checkpoint import main as checkpoint_main
from align_mamba.core.errors import DataIntegrityError, NonFiniteLossError, run_cli
from align_mamba.core.loop import Loop
from align_mamba.recall.checkpoint import load_model, save_model
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
from align_mamba.recall.evaluate import main as evaluate_main
from align_mamba.recall.models import build_model
from align_mamba.recall.mqar import MQARConfig
from align_mamba.recall.storage import write_mqar
from align_mamba.recall.train import main as train_main
from align_mamba.recall.train import train_cell
from align_mamba.secrets.infer import load_tagger, save_tagger
from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(variant="transformer", d_model=16, n_layers=1, n_heads=2, vocab_size=8192)
META = {
    "cell": "tiny",
    "architecture": "transformer",
    "num_pairs": 4,
    "seed": 0,
    "best_step": 1,
    "best_val_accuracy": 0.0,
    "backend": "sdpa",
    "device": "cpu",
}
TAGGER_SETTINGS = {"threshold": 0.5, "min_span_len": 8, "chunk_len": 64, "overlap": 16}


@pytest.fixture(scope="module")
def mqar4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "np4"
    return write_mqar(
        MQARConfig(num_pairs=4, seq_len=16, num_queries=None, train_size=200, val_size=32, test_size=32, seed=0), out
    )


def _tiny_cell(**train) -> CellConfig:
    settings = dict(steps=4, batch_size=16, eval_every=2, checkpoint_every=2, device="cpu", backend="reference")
    return CellConfig(TINY, TrainConfig(**{**settings, **train}))


def flip_exponent_bit(path: Path, tensor: torch.Tensor) -> None:
    """Flip the top exponent bit of the first float32 of `tensor`'s bytes inside the saved file
    (torch.save stores tensor data uncompressed): 0.05 becomes ~1.7e37, as a bad disk or RAM would."""
    raw = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0 and raw.find(needle, at + 1) < 0, "the tensor's bytes must occur once in the file"
    raw[at + 3] ^= 0x40  # little-endian float32: byte 3 holds the sign and the top 7 exponent bits
    path.write_bytes(bytes(raw))


def _saved_mqar_model(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(TINY, "reference")
    save_model(path, model, model.state_dict(), META)
    return model


# ---- checksums -----------------------------------------------------------------------------------


def test_checksum_covers_every_tensor_and_setting():
    payload = {
        "state_dict": {"w": torch.ones(3), "b": torch.zeros(2, dtype=torch.bfloat16)},
        "meta": {"lr": 1e-3, "names": ("a", "b")},
    }
    digest = payload_digest(payload)
    assert payload_digest({**payload, CHECKSUM_KEY: "ignored"}) == digest
    changed = {
        "state_dict": {**payload["state_dict"], "w": torch.tensor([1.0, 1.0, 1.0000001])},
        "meta": payload["meta"],
    }
    assert payload_digest(changed) != digest
    assert payload_digest({**payload, "meta": {"lr": 2e-3, "names": ("a", "b")}}) != digest
    # the same values as a list (what a tuple may load back as) hash alike
    assert payload_digest({**payload, "meta": {"lr": 1e-3, "names": ["a", "b"]}}) == digest


def test_a_flipped_exponent_bit_in_an_mqar_model_fails_evaluate_in_one_line(tmp_path, capsys):
    path = tmp_path / "model.pt"
    model = _saved_mqar_model(path)
    load_model(path, "reference", CPU)  # intact: loads
    flip_exponent_bit(path, model.embedding.weight[5])
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):
        load_model(path, "reference", CPU)
    argv = [
        "--checkpoint",
        str(path),
        "--data",
        str(tmp_path / "unused"),
        "--out",
        str(tmp_path / "m.json"),
        "--device",
        "cpu",
    ]
    assert run_cli(evaluate_main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "checksum mismatch" in err[0]
    assert not (tmp_path / "m.json").exists()


@pytest.fixture
def tagger_checkpoint(tmp_path) -> tuple[Path, ByteTagger]:
    torch.manual_seed(0)
    config = TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16)
    model = ByteTagger(config, "reference", 3, ("none", "aws_access_key_id", "github_classic"))
    path = tmp_path / "runs" / "secrets" / "tiny" / "model.pt"
    save_tagger(path, model, dict(TAGGER_SETTINGS))
    return path, model


def test_scan_with_a_corrupted_tagger_is_an_error_not_a_clean_result(tagger_checkpoint, tmp_path, capsys):
    path, model = tagger_checkpoint
    target = tmp_path / "config.py"
    target.write_text("TOKEN = 'ghp_R8qLz0w3VbN5tYc2XkP9mJd4Hs7Ga1Ef6Ui0'\n")
    assert cli_main(["scan", str(target), "--checkpoint", str(path), "--device", "cpu"]) in (0, 1)
    capsys.readouterr()
    flip_exponent_bit(path, model.embedding.weight[65])
    code = cli_main(["scan", str(target), "--checkpoint", str(path), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "checksum mismatch" in lines[0]


def test_a_truncated_checkpoint_is_one_line(tagger_checkpoint):
    path, _ = tagger_checkpoint
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataIntegrityError, match="is not a byte-tagger checkpoint") as err:
        load_tagger(path, CPU)
    assert "\n" not in str(err.value)


def test_a_checkpoint_whose_config_does_not_fit_its_weights_is_one_line(tmp_path, capsys):
    path = tmp_path / "model.pt"
    _saved_mqar_model(path)
    payload = load_checkpoint(path)
    payload["model_config"]["d_model"] = 32  # an edited config, re-stamped: the checksum is fine
    save_checkpoint(path, payload)
    with pytest.raises(DataIntegrityError, match=r"weights do not fit the model its config describes") as err:
        load_model(path, "reference", CPU)
    assert "is (8192, 16) in the file, (8192, 32) for the config" in str(err.value)
    argv = ["--checkpoint", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "m.json"), "--device", "cpu"]
    assert run_cli(evaluate_main, argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_checkpoint_from_before_checksums_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "model.pt"
    model = _saved_mqar_model(path)
    payload = load_checkpoint(path)
    torch.save(payload, path)  # the old format: the same dict without its checksum
    with caplog.at_level("WARNING"):
        loaded, meta = load_model(path, "reference", CPU)
    assert "has no checksum" in caplog.text and meta["cell"] == "tiny"
    assert torch.equal(loaded.embedding.weight, model.embedding.weight)
    assert run_cli(checkpoint_main, ["stamp", str(path)]) == 0
    assert CHECKSUM_KEY in torch.load(path, weights_only=True)


def test_the_committed_tagger_still_loads_and_matches_its_weights(caplog):
    path = ROOT / "results" / "gpu" / "secrets" / "bimamba" / "model.pt"
    if not path.is_file() or path.stat().st_size < 10_000:
        pytest.skip("results/gpu/secrets/bimamba/model.pt is not in this checkout")
    with caplog.at_level("WARNING"):
        model, meta = load_tagger(path, CPU, "reference")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert CHECKSUM_KEY in payload and "no checksum" not in caplog.text  # stamped once, verified since
    saved = payload["state_dict"]
    assert set(model.state_dict()) == set(saved)  # parameter names unchanged by the MixerSpec refactor
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert meta["class_names"][0] == "none"


# ---- finite weights and valid JSON ---------------------------------------------------------------


def test_non_finite_weights_are_never_saved(tmp_path):
    model = build_model(TINY, "reference")
    weights = model.state_dict()
    weights["norm_f.weight"] = torch.full_like(weights["norm_f.weight"], math.inf)
    with pytest.raises(NonFiniteLossError, match="norm_f.weight"):
        save_model(tmp_path / "model.pt", model, weights, META)
    assert not (tmp_path / "model.pt").exists()


def test_an_infinite_rate_is_refused_before_training_and_writes_nothing(mqar4, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "--data",
        str(mqar4),
        "--out",
        str(out),
        "--variant",
        "transformer",
        "--d-model",
        "16",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--steps",
        "1",
        "--batch-size",
        "16",
        "--lr",
        "inf",
        "--device",
        "cpu",
    ]
    code = run_cli(train_main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == "error: train.lr must be a finite number, got inf (float)"
    assert not (out / "model.pt").exists() and not (out / "train.json").exists()


def test_weights_turned_infinite_mid_run_stop_training_without_outputs(mqar4, tmp_path, monkeypatch):
    step = Loop.train_step

    def poisoned(self, index):
        result = step(self, index)
        if index == 2:
            with torch.no_grad():
                self.task.model.norm_f.weight[0] = math.inf
        return result

    monkeypatch.setattr(Loop, "train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"cell transformer-np4-ds64-s0: (loss is nan|weights became)"):
        train_cell(_tiny_cell(steps=6, eval_every=6, checkpoint_every=6), mqar4, tmp_path / "run")
    assert not (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / "train.json").exists()


def test_json_writer_refuses_nan_and_infinity_naming_the_key(tmp_path):
    with pytest.raises(DataIntegrityError, match=r"m.json: refusing to write the non-finite value at a.b.1"):
        atomic_write_json(tmp_path / "m.json", {"a": {"b": [1.0, math.nan]}, "c": 1})
    with pytest.raises(DataIntegrityError, match="at lr"):
        atomic_write_json(tmp_path / "m.json", {"lr": math.inf})
    assert not (tmp_path / "m.json").exists()
    atomic_write_json(tmp_path / "m.json", {"a": None, "b": 1.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": 1.5}


# ---- resume points -------------------------------------------------------------------------------


def _uninterrupted(mqar4: Path, tmp_path: Path) -> dict:
    train_cell(_tiny_cell(), mqar4, tmp_path / "reference")
    return torch.load(tmp_path / "reference" / "model.pt", weights_only=True)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupt_resume_point_is_moved_aside_and_training_starts_afresh(mqar4, tmp_path, caplog, damage):
    out = tmp_path / "run"
    resume = out / "resume" / "last.pt"
    model = build_model(TINY, "reference")
    save_checkpoint(resume, {"fingerprint": {}, "model": model.state_dict(), "optimizer": {}, "state": {}})
    if damage == "truncate":
        resume.write_bytes(resume.read_bytes()[:1000])
    elif damage == "flip":
        flip_exponent_bit(resume, model.embedding.weight[7])
    else:
        resume.write_bytes(b"\x00" * 64)
    with caplog.at_level("WARNING"):
        summary = train_cell(_tiny_cell(), mqar4, out)
    assert "starting afresh" in caplog.text and summary["steps_run"] == 4
    assert len(list((out / "resume").glob("last.pt.corrupt-*"))) == 1
    expected = _uninterrupted(mqar4, tmp_path)
    got = torch.load(out / "model.pt", weights_only=True)
    assert all(torch.equal(t, got["state_dict"][k]) for k, t in expected["state_dict"].items())


def test_a_foreign_resume_point_is_moved_aside(mqar4, tmp_path, caplog):
    out = tmp_path / "run"
    save_checkpoint(
        out / "resume" / "last.pt", {"fingerprint": {"cell": "other"}, "model": {}, "optimizer": {}, "state": {}}
    )
    with caplog.at_level("WARNING"):
        train_cell(_tiny_cell(), mqar4, out)
    assert "other parameters or data" in caplog.text and "starting afresh" in caplog.text
    assert len(list((out / "resume").glob("last.pt.foreign-*"))) == 1
    assert (out / "model.pt").is_file() and not (out / "resume" / "last.pt").exists()


def test_metrics_name_the_device():
    from align_mamba.core.backends import describe_device

    assert describe_device(torch.device("cpu")) == "cpu"
