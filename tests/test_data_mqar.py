"""Properties of the MQAR generator, its storage format and its CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli
from align_mamba.recall import mqar, storage
from align_mamba.recall.data import main as cli_main
from align_mamba.recall.mqar import BOS, EOS, FILLER_RANGE, IGNORE_INDEX, KEY_RANGE, PAD, SEP, VALUE_RANGE, MQARConfig
from align_mamba.recall.storage import load_mqar, read_manifest, write_mqar

SRC = Path(__file__).resolve().parents[1] / "src"
SPLITS = ("train", "validation", "test")
BASE = dict(num_pairs=8, seq_len=64, num_queries=4, train_size=300, val_size=60, test_size=60, seed=7)


def _config(**overrides) -> MQARConfig:
    return MQARConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module", params=["pad", "random"])
def dataset(request, tmp_path_factory) -> Path:
    return write_mqar(_config(filler=request.param), tmp_path_factory.mktemp(request.param) / "ds")


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _contexts(data_dir: Path, split: str) -> np.ndarray:
    """(n, 2N) keys and values in pair order, read from the seq2seq encoder input."""
    enc = load_mqar(data_dir, split, "seq2seq").enc_inputs.numpy()
    n = (enc.shape[1] - 2) // 3
    return np.concatenate([enc[:, 1 : 3 * n + 1 : 3], enc[:, 3 : 3 * n + 1 : 3]], axis=1)


def test_worked_example_in_docstring():
    draw = mqar._Draw(
        keys=np.array([[17, 42]]),
        values=np.array([[5000, 4100]]),
        slots=np.array([[1, 0]]),
        gaps=np.array([[0, 1]]),
        filler=None,
    )
    config = MQARConfig(num_pairs=2, seq_len=8, num_queries=2, train_size=1, val_size=1, test_size=1, seed=0)
    dec = mqar._decoder_arrays(config, draw)
    assert dec.inputs.tolist() == [[17, 5000, 42, 4100, 42, PAD, 17, PAD]]
    assert dec.labels.tolist() == [[-100, -100, -100, -100, 4100, -100, 5000, -100]]
    assert dec.query_slot.tolist() == [[1, 0]] and dec.query_distance.tolist() == [[2, 6]]
    s2s = mqar._seq2seq_arrays(config, draw)
    assert s2s.enc_inputs.tolist() == [[BOS, 17, SEP, 5000, 42, SEP, 4100, EOS]]
    assert s2s.dec_inputs.tolist() == [[BOS, 42, 17]]
    assert s2s.dec_labels.tolist() == [[-100, 4100, 5000]]
    assert s2s.query_distance.tolist() == [[5, 9]]


@pytest.mark.parametrize("split", SPLITS)
def test_labels_are_the_values_of_the_queried_keys(dataset, split):
    n_pairs = BASE["num_pairs"]
    lookups = [dict(zip(row[:n_pairs], row[n_pairs:])) for row in _contexts(dataset, split).tolist()]
    dec = load_mqar(dataset, split, "decoder")
    s2s = load_mqar(dataset, split, "seq2seq")
    for i, lookup in enumerate(lookups):
        positions = (dec.labels[i] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert len(positions) == BASE["num_queries"]
        for p in positions:
            assert dec.labels[i, p].item() == lookup[dec.inputs[i, p].item()]
        assert s2s.labels[i, 0].item() == IGNORE_INDEX
        for key, value in zip(s2s.inputs[i, 1:].tolist(), s2s.labels[i, 1:].tolist()):
            assert value == lookup[key]
        # Both layouts render the same draw: the same queries in the same order.
        assert dec.inputs[i, positions].tolist() == s2s.inputs[i, 1:].tolist()


def test_token_ranges_and_distinct_keys(dataset):
    n = BASE["num_pairs"]
    filler = read_manifest(dataset)["config"]["filler"]
    for split in SPLITS:
        context = _contexts(dataset, split)
        keys, values = context[:, :n], context[:, n:]
        assert keys.min() >= KEY_RANGE.start and keys.max() < KEY_RANGE.stop
        assert values.min() >= VALUE_RANGE.start and values.max() < VALUE_RANGE.stop
        assert all(len(set(row)) == n for row in keys.tolist())
        enc = load_mqar(dataset, split, "seq2seq").enc_inputs.numpy()
        assert (enc[:, 0] == BOS).all() and (enc[:, -1] == EOS).all() and (enc[:, 2:-1:3] == SEP).all()
        dec = load_mqar(dataset, split, "decoder")
        inputs, labels = dec.inputs.numpy(), dec.labels.numpy()
        assert np.array_equal(inputs[:, 0 : 2 * n : 2], keys) and np.array_equal(inputs[:, 1 : 2 * n : 2], values)
        rest = inputs[:, 2 * n :][labels[:, 2 * n :] == IGNORE_INDEX]
        if filler == "pad":
            assert (rest == PAD).all()
        else:
            assert rest.min() >= FILLER_RANGE.start and rest.max() < FILLER_RANGE.stop
            assert len(np.unique(rest)) > 1000


def test_query_metadata_matches_positions(dataset):
    n, m = BASE["num_pairs"], BASE["num_queries"]
    dec = load_mqar(dataset, "train", "decoder")
    s2s = load_mqar(dataset, "train", "seq2seq")
    assert dec.query_slot.shape == (len(dec), m) and dec.num_pairs == n
    assert np.array_equal(dec.query_slot.numpy(), s2s.query_slot.numpy())
    inputs, labels = dec.inputs.numpy(), dec.labels.numpy()
    slots = dec.query_slot.numpy()
    for i in range(len(dec)):
        positions = np.flatnonzero(labels[i] != IGNORE_INDEX)
        assert (positions >= 2 * n).all() and ((positions - 2 * n) % 2 == 0).all()
        assert np.array_equal(inputs[i, 2 * slots[i]], inputs[i, positions])
        assert np.array_equal(dec.query_distance[i].numpy(), positions - 2 * slots[i])
    enc_len = s2s.enc_inputs.shape[1]
    key_pos = 1 + 3 * slots
    assert np.array_equal(np.take_along_axis(s2s.enc_inputs.numpy(), key_pos, 1), s2s.inputs.numpy()[:, 1:])
    assert np.array_equal(s2s.query_distance.numpy(), enc_len + np.arange(1, m + 1) - key_pos)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = _file_hashes(write_mqar(_config(), tmp_path / "a"))
    assert first == _file_hashes(write_mqar(_config(), tmp_path / "b"))
    other = _file_hashes(write_mqar(_config(seed=8), tmp_path / "c"))
    assert all(first[name] != other[name] for name in first)


def test_splits_share_no_context(dataset):
    sets = {split: {tuple(row) for row in _contexts(dataset, split).tolist()} for split in SPLITS}
    assert sum(len(s) for s in sets.values()) == BASE["train_size"] + BASE["val_size"] + BASE["test_size"]
    assert not (sets["train"] & sets["validation"]) and not (sets["train"] & sets["test"])
    assert not (sets["validation"] & sets["test"])


def test_seen_contexts_are_dropped_and_refilled():
    config = _config(layouts=("seq2seq",))
    plain = mqar.generate_split(config, "train", set()).seq2seq.enc_inputs
    seen: set[bytes] = set()
    # Mark the contexts of rows 0, 5 and 9 as taken by another split.
    mqar._take_fresh(mqar._Draw(plain[[0, 5, 9], 1:-1:3], plain[[0, 5, 9], 3::3], None, None, None), seen, 3)
    refilled = mqar.generate_split(config, "train", seen).seq2seq.enc_inputs
    assert len(refilled) == config.train_size
    expected = np.delete(plain, [0, 5, 9], axis=0)
    assert np.array_equal(refilled[: len(expected)], expected)


def test_smaller_split_is_a_prefix_of_a_larger_one():
    small = mqar.generate_split(_config(train_size=50), "train", set()).decoder.inputs
    large = mqar.generate_split(_config(train_size=500), "train", set()).decoder.inputs
    assert np.array_equal(small, large[:50])


def test_random_filler_keeps_the_same_pairs_and_queries():
    pad = mqar.generate_split(_config(), "test", set())
    rnd = mqar.generate_split(_config(filler="random"), "test", set())
    for name in ("enc_inputs", "dec_inputs", "dec_labels", "query_slot"):
        assert np.array_equal(getattr(pad.seq2seq, name), getattr(rnd.seq2seq, name))
    assert np.array_equal(pad.decoder.labels, rnd.decoder.labels)


def test_corrupted_or_missing_files_are_detected(tmp_path):
    root = write_mqar(_config(), tmp_path / "ds")
    target = root / "validation" / "decoder" / "labels.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match="validation/decoder/labels.npy"):
        load_mqar(root, "validation", "decoder")
    load_mqar(root, "validation", "seq2seq")
    (root / "test" / "seq2seq" / "dec_inputs.npy").unlink()
    with pytest.raises(DataIntegrityError, match="dec_inputs.npy"):
        load_mqar(root, "test", "seq2seq")
    (root / "manifest.json").unlink()
    with pytest.raises(DataIntegrityError, match="manifest"):
        load_mqar(root, "train", "decoder")


def test_load_rejects_unknown_or_unwritten_split_and_layout(tmp_path):
    root = write_mqar(_config(layouts=("decoder",)), tmp_path / "ds")
    assert not (root / "train" / "seq2seq").exists()
    for split, layout in (("dev", "decoder"), ("train", "encoder"), ("train", "seq2seq")):
        with pytest.raises(ConfigError):
            load_mqar(root, split, layout)


def test_manifest_records_config_tokens_and_files(tmp_path):
    root = write_mqar(_config(num_queries=None, num_pairs=4), tmp_path / "ds")
    manifest = read_manifest(root)
    assert manifest["generator"] == "mqar" and manifest["config"]["num_queries"] == "all"
    assert manifest["tokens"]["key_range"] == [10, 4096] and manifest["tokens"]["vocab_size"] == 8192
    assert manifest["splits"]["validation"]["num_examples"] == BASE["val_size"]
    assert set(manifest["files"]) == {str(p.relative_to(root)) for p in root.rglob("*.npy")}
    assert manifest["files"]["train/decoder/inputs.npy"]["shape"] == [BASE["train_size"], BASE["seq_len"]]


BAD_PARAMS = [
    ("num_pairs", dict(num_pairs=5000, seq_len=20000), ["--num-pairs", "5000", "--seq-len", "20000"]),
    ("num_queries", dict(num_queries=9), ["--num-queries", "9"]),
    ("seq_len", dict(seq_len=23), ["--seq-len", "23"]),
    ("layouts", dict(layouts=("seq2seq", "encoder")), ["--layouts", "seq2seq", "encoder"]),
    ("seed", dict(seed="7"), ["--seed", "seven"]),
]


@pytest.mark.parametrize(("field", "overrides", "_argv"), BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_bad_params_raise_config_error_naming_the_field(field, overrides, _argv):
    with pytest.raises(ConfigError, match=field):
        _config(**overrides)


@pytest.mark.parametrize(
    "bad",
    [
        dict(layouts=()),
        dict(train_size=0),
        dict(power_a=0.0),
        dict(filler="zeros"),
        dict(num_pairs=True),
        dict(num_queries=0),
    ],
)
def test_other_bad_params_raise_config_error(bad):
    with pytest.raises(ConfigError):
        _config(**bad)


def _cli_args(out: Path, *extra: str) -> list[str]:
    args = [
        "--out",
        str(out),
        "--num-pairs",
        "8",
        "--seq-len",
        "64",
        "--num-queries",
        "4",
        "--train-size",
        "30",
        "--val-size",
        "10",
        "--test-size",
        "10",
        "--seed",
        "1",
    ]
    return args + list(extra)


@pytest.mark.parametrize(("_field", "_overrides", "argv"), BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_cli_bad_params_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, _field, _overrides, argv):
    assert run_cli(cli_main, _cli_args(tmp_path / "out", *argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_module_writes_a_dataset_and_reports_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "align_mamba.recall.data"]
    ok = subprocess.run(
        command + _cli_args(tmp_path / "ok", "--num-queries", "all"), capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0 and ok.stderr.count("\n") == 1 and "wrote MQAR dataset" in ok.stderr
    assert read_manifest(tmp_path / "ok")["config"]["num_queries"] == "all"
    bad = subprocess.run(
        command + _cli_args(tmp_path / "bad", "--filler", "zeros"), capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: filler") and bad.stderr.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_existing_dataset_is_replaced_but_other_directories_are_not(tmp_path):
    root = write_mqar(_config(), tmp_path / "ds")
    write_mqar(_config(seed=99), root)
    assert read_manifest(root)["config"]["seed"] == 99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="out"):
        write_mqar(_config(), precious)
    assert (precious / "notes.txt").read_text() == "keep"


def test_failed_write_leaves_no_partial_output(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, write):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return storage_write(path, write)

    storage_write = storage.write_file
    monkeypatch.setattr(storage, "write_file", failing_write)
    with pytest.raises(OSError):
        write_mqar(_config(), tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def _gaps(config: MQARConfig, size: int = 2000) -> np.ndarray:
    """Gap of every query, (size, M), read back from the decoder labels."""
    labels = mqar.generate_split(config, "test", set()).decoder.labels[:size]
    rows, positions = np.nonzero(labels != IGNORE_INDEX)
    return ((positions - 2 * config.num_pairs) // 2).reshape(len(labels), -1)


def test_power_law_puts_most_queries_near_the_context():
    params = dict(num_pairs=16, num_queries=16, seq_len=32 + 2 * 256, layouts=("decoder",), test_size=2000)
    power = _gaps(_config(**params))
    uniform = _gaps(_config(power_a=1.0, **params))
    assert (np.diff(power, axis=1) > 0).all()
    # Uniform gaps over range(256) have median ~128; p(g) ∝ 1/(g+1) puts it near 20.
    assert np.median(power) < 256 / 4
    assert abs(np.median(uniform) - 127.5) < 10


def test_single_query_gap_follows_zoology_distribution():
    config = _config(num_pairs=1, num_queries=1, seq_len=2 + 2 * 16, layouts=("decoder",), test_size=20000)
    counts = np.bincount(_gaps(config, 20000).ravel(), minlength=16) / 20000
    p = np.arange(1, 17, dtype=float) ** (0.01 - 1)
    # Each frequency has standard error below 0.0035; 0.015 is beyond four of them.
    assert np.abs(counts - p / p.sum()).max() < 0.015


def test_all_queries_cover_every_key_once():
    arrays = mqar.generate_split(_config(num_queries=None), "validation", set())
    s2s = arrays.seq2seq
    n = BASE["num_pairs"]
    assert s2s.dec_inputs.shape == (BASE["val_size"], n + 1)
    assert (np.sort(s2s.query_slot, axis=1) == np.arange(n)).all()
    assert np.array_equal(np.sort(s2s.dec_inputs[:, 1:], axis=1), np.sort(s2s.enc_inputs[:, 1:-1:3], axis=1))
    assert ((arrays.decoder.labels != IGNORE_INDEX).sum(axis=1) == n).all()


def test_cli_takes_dvc_spellings_length_per_pair_and_a_log_file(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [
        sys.executable,
        "-m",
        "align_mamba.recall.data",
        "--out",
        str(tmp_path / "ds"),
        "--num_pairs",
        "4",
        "--seq_len_per_pair",
        "4",
        "--num_queries",
        "all",
        "--power_a",
        "0.01",
        "--train_size",
        "20",
        "--val_size",
        "5",
        "--test_size",
        "5",
        "--seed",
        "3",
        "--log",
        str(tmp_path / "logs" / "data.log"),
    ]
    subprocess.run(command, check=True, capture_output=True, env=env)
    assert read_manifest(tmp_path / "ds")["config"]["seq_len"] == 16
    assert "wrote MQAR dataset" in (tmp_path / "logs" / "data.log").read_text()
    both = subprocess.run(command + ["--seq-len", "16"], capture_output=True, text=True, env=env)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr and both.stderr.count("\n") == 1


def test_num_keys_narrows_keys_values_and_vocabulary(tmp_path):
    # K = 16: keys 10..25, values 26..41, a vocabulary of 42 tokens; filler never leaves it.
    root = write_mqar(_config(num_keys=16, filler="random"), tmp_path / "ds")
    manifest = read_manifest(root)
    assert manifest["tokens"]["key_range"] == [10, 26] and manifest["tokens"]["value_range"] == [26, 42]
    assert manifest["tokens"]["vocab_size"] == 42 and manifest["config"]["num_keys"] == 16
    split = load_mqar(root, "train", "seq2seq")
    assert (split.vocab_size, split.num_values) == (42, 16)
    keys, values = split.enc_inputs[:, 1:-1:3], split.enc_inputs[:, 3:-1:3]
    assert keys.min() >= 10 and keys.max() < 26 and values.min() >= 26 and values.max() < 42
    decoder = load_mqar(root, "train", "decoder")
    assert decoder.inputs.max() < 42 and decoder.inputs.min() >= 0


def test_num_keys_unset_keeps_the_full_vocabulary(tmp_path):
    split = load_mqar(write_mqar(_config(), tmp_path / "ds"), "train", "decoder")
    assert (split.vocab_size, split.num_values) == (8192, len(VALUE_RANGE))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_keys=0), "num_keys must be >= 1"),
        (dict(num_keys=4), "num_pairs must be <= 4"),
        (dict(num_keys=5000), "num_keys must be <= 4086"),
        (dict(num_keys=2, num_pairs=2, num_queries=2, train_size=10), "exceeds half"),
    ],
)
def test_num_keys_bad_values_fail_with_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(**overrides)
