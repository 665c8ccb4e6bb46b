"""Fault injection: kill -9 mid-run, flipped bytes in every kind of file, two writers into one output.

What must hold whatever the fault:
- after a kill, an output is either absent or whole (model.pt loads, JSON parses, a dataset verifies),
  and the rerun finishes (the kernel dropped the killed run's output lock);
- a damaged input is one `error: ...` line and exit 2, never a traceback and never a result;
- a second writer into an output in use fails at once with one line naming the holder.

Kill points are seeded delays after the run took its output lock (so the kill lands in the real
work, not in Python's start-up) plus "right after the first resume point"; whatever the timing,
the assertions are the same, so the tests are deterministic in what they check. Runs are tiny.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from align_mamba.core.errors import DataIntegrityError, run_cli
from align_mamba.core.lock import lock_path, output_lock
from align_mamba.recall.checkpoint import load_model
from align_mamba.recall.config import CellConfig, ModelConfig, TrainConfig
from align_mamba.recall.mqar import LAYOUTS, SPLITS, MQARConfig
from align_mamba.recall.storage import load_mqar, read_manifest, write_mqar

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
SEED = 18
TINY_MODEL = [
    "--variant",
    "mamba2",
    "--d-model",
    "16",
    "--n-layers",
    "1",
    "--d-state",
    "4",
    "--headdim",
    "8",
    "--chunk-size",
    "8",
    "--device",
    "cpu",
    "--backend",
    "reference",
]
LOCK_LINE = re.compile(
    r"error: (?P<out>.+) is being written by pid (?P<pid>\d+) on (?P<host>\S+) since "
    r"(?P<started>\S+) \(lock file (?P<lock>.+)\); wait for it or stop it"
)


def _train_argv(data: Path, out: Path, steps: int = 30) -> list[str]:
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        *TINY_MODEL,
        "--steps",
        str(steps),
        "--batch-size",
        "8",
        "--eval-every",
        "5",
        "--checkpoint-every",
        "5",
        "--patience",
        "100",
    ]


def _module(name: str, argv: list[str]) -> list[str]:
    return [sys.executable, "-m", name, *argv]


def _strict_json(path: Path):
    """json.loads that rejects NaN/Infinity literals (not JSON)."""

    def reject(token):
        raise ValueError(f"{path}: non-JSON literal {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> bool:
    """Poll `condition` until true; False when `proc` exited first (it finished before the fault)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return True


def _held(out: Path) -> bool:
    """The run writing `out` holds its lock and has written who it is."""
    try:
        return "pid=" in lock_path(out).read_text()
    except FileNotFoundError:
        return False


def _kill(command: list[str], out: Path, delay: float | None = None, until=None) -> None:
    """Start `command`, SIGKILL it `delay` s after it locked `out` (or once `until()` holds)."""
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if _wait_for(lambda: _held(out), f"{out} to be locked", proc):
            if until is not None:
                _wait_for(until, "the kill point", proc)
            else:
                time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _one_error_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _flip(path: Path, rng: random.Random, offset: int | None = None, bit: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    offset = rng.randrange(len(data)) if offset is None else offset
    data[offset] ^= (1 << rng.randrange(8)) if bit is None else bit
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def mqar(tmp_path_factory) -> Path:
    return write_mqar(
        MQARConfig(num_pairs=4, seq_len=16, num_queries=None, train_size=256, val_size=32, test_size=64, seed=0),
        tmp_path_factory.mktemp("data") / "np4",
    )


@pytest.fixture(scope="module")
def trained(mqar, tmp_path_factory) -> Path:
    """A tiny trained cell's model.pt (in-process: no start-up cost)."""
    from align_mamba.recall.train import train_cell

    out = tmp_path_factory.mktemp("run") / "cell"
    cell = CellConfig(
        ModelConfig(variant="mamba2", d_model=16, n_layers=1, d_state=4, headdim=8, chunk_size=8),
        TrainConfig(steps=4, batch_size=8, eval_every=2, checkpoint_every=2, device="cpu", backend="reference"),
    )
    train_cell(cell, mqar, out)
    return out / "model.pt"


def _copy_dataset(source: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(source, dest)
    return dest


# ---- kill -9 ------------------------------------------------------------------------------------


def _check_train_outputs(out: Path) -> dict | None:
    """Whole or absent: model.pt loads, train.json is strict JSON, history has one row per step run."""
    if not (out / "model.pt").exists():
        return None
    load_model(out / "model.pt", "reference", torch.device("cpu"))
    summary = _strict_json(out / "train.json")
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["steps_run"]
    return summary


def test_train_killed_at_random_points_resumes_and_leaves_no_half_outputs(mqar, tmp_path):
    rng = random.Random(SEED)
    out = tmp_path / "cell"
    command = _module("align_mamba.recall.train", _train_argv(mqar, out))
    _kill(command, out, delay=rng.uniform(0.0, 1.0))
    assert _check_train_outputs(out) is None or not (out / "resume" / "last.pt").exists()
    _kill(command, out, until=lambda: (out / "resume" / "last.pt").exists())
    _check_train_outputs(out)
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed at step" in rerun.stderr or "done" in rerun.stderr
    summary = _check_train_outputs(out)
    assert summary is not None and summary["steps_run"] == 30
    assert not lock_path(out).exists(), "a finished run removes its lock file"


def test_evaluate_killed_at_random_points_writes_whole_metrics_or_none(mqar, trained, tmp_path):
    rng = random.Random(SEED + 1)
    metrics = tmp_path / "metrics.json"
    command = _module(
        "align_mamba.recall.evaluate",
        [
            "--checkpoint",
            str(trained),
            "--data",
            str(mqar),
            "--out",
            str(metrics),
            "--backend",
            "reference",
            "--device",
            "cpu",
            "--batch-size",
            "16",
        ],
    )
    _kill(command, metrics, delay=rng.uniform(0.0, 0.5))
    assert not metrics.exists() or 0.0 <= _strict_json(metrics)["accuracy"] <= 1.0
    assert [p.name for p in tmp_path.iterdir() if p.name != ".metrics.json.lock"] in ([], ["metrics.json"]), (
        "a kill leaves no visible half file beside the metrics"
    )
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert 0.0 <= _strict_json(metrics)["accuracy"] <= 1.0


def _verify_mqar(out: Path) -> None:
    for split in SPLITS:
        for layout in LAYOUTS:
            load_mqar(out, split, layout)


def _verify_secrets(out: Path) -> None:
    from align_mamba.secrets.data import SECRET_SPLITS, load_secret_split

    for split in SECRET_SPLITS:
        load_secret_split(out, split)


GENERATORS = {
    "mqar": (
        "align_mamba.recall.data",
        [
            "--num-pairs",
            "8",
            "--seq-len",
            "64",
            "--num-queries",
            "all",
            "--train-size",
            "20000",
            "--val-size",
            "500",
            "--test-size",
            "500",
            "--seed",
            "3",
        ],
        _verify_mqar,
    ),
    "secrets": (
        "align_mamba.secrets.data",
        [
            "--seed",
            "3",
            "--train-files",
            "20",
            "--val-files",
            "4",
            "--test-files",
            "4",
            "--unseen-files",
            "4",
            "--decoy-files",
            "4",
        ],
        _verify_secrets,
    ),
}


@pytest.mark.parametrize("generator", GENERATORS)
def test_data_generation_killed_leaves_a_whole_dataset_or_none(generator, tmp_path):
    module, argv, verify = GENERATORS[generator]
    rng = random.Random(f"{SEED}-{generator}")
    out = tmp_path / "data" / generator
    command = _module(module, ["--out", str(out), *argv])
    staging = lambda: any(out.parent.glob(f".{generator}.tmp-*"))  # noqa: E731
    # First into nothing at a random point (mostly while generating), then over the dataset the first
    # rerun wrote, the moment it starts writing its staged copy.
    for kill_point in ({"delay": rng.uniform(0.0, 0.6)}, {"until": staging}):
        _kill(command, out, **kill_point)
        if out.exists():
            verify(out)
        rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        verify(out)
        assert sorted(p.name for p in out.parent.iterdir()) == [generator], (
            "the rerun cleared what the killed run staged, and released its lock file"
        )


# ---- flipped bytes --------------------------------------------------------------------------------


def test_every_dataset_array_with_a_flipped_byte_is_refused(mqar, tmp_path):
    rng = random.Random(SEED)
    files = read_manifest(mqar)["files"]
    for relative in sorted(files):
        data = _copy_dataset(mqar, tmp_path / relative.replace("/", "_"))
        _flip(data / relative, rng)
        split, layout, _ = relative.split("/")
        with pytest.raises(DataIntegrityError, match="does not match the manifest"):
            load_mqar(data, split, layout)


def test_manifest_bit_flips_are_all_refused(mqar, tmp_path):
    """Any one flipped bit of the manifest, including in values no file hash covers (num_pairs, seed)."""
    rng = random.Random(SEED)
    data = _copy_dataset(mqar, tmp_path / "data")
    original = (data / "manifest.json").read_bytes()
    for _ in range(300):
        (data / "manifest.json").write_bytes(original)
        _flip(data / "manifest.json", rng)
        with pytest.raises(DataIntegrityError, match="manifest"):
            _verify_mqar(data)
    (data / "manifest.json").write_bytes(original)
    seed_at = original.index(b'"seed": 0') + len(b'"seed": ')
    _flip(data / "manifest.json", rng, offset=seed_at, bit=0x01)  # seed 0 -> 1: still valid JSON
    with pytest.raises(DataIntegrityError, match="do not match its manifest_sha256"):
        read_manifest(data)


def test_train_and_evaluate_on_flipped_data_are_one_line(mqar, trained, tmp_path, capsys):
    from align_mamba.recall.evaluate import main as evaluate_main
    from align_mamba.recall.train import main as train_main

    rng = random.Random(SEED)
    data = _copy_dataset(mqar, tmp_path / "train_flip")
    _flip(data / "train" / "decoder" / "inputs.npy", rng)
    code = run_cli(train_main, _train_argv(data, tmp_path / "run"))
    _one_error_line(capsys, code, "train/decoder/inputs.npy", "does not match the manifest")
    assert not (tmp_path / "run" / "model.pt").exists()

    data = _copy_dataset(mqar, tmp_path / "test_flip")
    _flip(data / "test" / "decoder" / "labels.npy", rng)
    argv = [
        "--checkpoint",
        str(trained),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "m.json"),
        "--backend",
        "reference",
        "--device",
        "cpu",
    ]
    _one_error_line(capsys, run_cli(evaluate_main, argv), "test/decoder/labels.npy")
    assert not (tmp_path / "m.json").exists()

    data = _copy_dataset(mqar, tmp_path / "manifest_flip")
    _flip(
        data / "manifest.json",
        rng,
        offset=(data / "manifest.json").read_bytes().index(b'"num_pairs": 4') + 13,
        bit=0x01,
    )  # num_pairs 4 -> 5
    _one_error_line(capsys, run_cli(train_main, _train_argv(data, tmp_path / "run2")), "manifest.json")


def test_secret_dataset_flips_in_each_kind_of_file_are_refused(tmp_path):
    from align_mamba.secrets.data import SecretDataConfig, load_secret_split, write_secret_dataset

    rng = random.Random(SEED)
    good = write_secret_dataset(
        SecretDataConfig(seed=5, train_files=6, val_files=2, test_files=2, unseen_files=2, decoy_files=2),
        tmp_path / "good",
    )
    carrier = sorted(p for p in (good / "train").rglob("*") if p.is_file() and p.suffix not in (".jsonl", ".npy"))[0]
    for victim in (
        carrier.relative_to(good),
        Path("train/labels.jsonl"),
        Path("train/mask.npy"),
        Path("manifest.json"),
    ):
        data = _copy_dataset(good, tmp_path / "_".join(victim.parts))
        _flip(data / victim, rng)
        with pytest.raises(DataIntegrityError):
            load_secret_split(data, "train")


GARBAGE = {
    "random bytes": bytes(random.Random(SEED).randrange(256) for _ in range(512)),
    "NUL bytes": bytes(256),
    "empty": b"",
    "a list": b"- 1\n- 2\n",
    "a scalar": b"hello\n",
    "tabs": b"grid:\n\tseeds: [0]\n",
    "half a flow list": b"grid: {architectures: [\n",
    "a byte that is not UTF-8": (SRC.parent / "params.yaml").read_bytes().replace(b"seed", b"se\xffd", 1),
}


@pytest.mark.parametrize("kind", [*GARBAGE, "truncated", "flipped bytes"])
def test_params_garbage_is_one_line(kind, tmp_path, capsys):
    """`python -m align_mamba.pipeline check` on a damaged params.yaml: exit 2 and one line, or, when the
    damage happens to leave a valid file (a flipped comment letter), exit 0 — never a traceback."""
    from align_mamba.pipeline import main as pipeline_main

    original = (SRC.parent / "params.yaml").read_bytes()
    path = tmp_path / "params.yaml"
    if kind == "truncated":
        path.write_bytes(original[: len(original) * 2 // 3])
    elif kind == "flipped bytes":
        rng = random.Random(SEED)
        for _ in range(20):
            path.write_bytes(original)
            _flip(path, rng)
            code = run_cli(pipeline_main, ["check", str(path)])
            if code != 0:
                _one_error_line(capsys, code)
            capsys.readouterr()
        return
    else:
        path.write_bytes(GARBAGE[kind])
    _one_error_line(capsys, run_cli(pipeline_main, ["check", str(path)]))


def _flip_a_weight(path: Path) -> None:
    """Flip the top exponent bit of the first float of the checkpoint's largest float32 tensor (x ~1e38)."""

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)

    payload = torch.load(path, weights_only=True, map_location="cpu")
    largest = max((t for t in tensors(payload) if t.dtype == torch.float32), key=torch.Tensor.numel)
    raw = path.read_bytes()
    at = raw.find(largest.contiguous().numpy().tobytes()[:64])
    assert at > 0 and largest.flatten()[0] != 0
    _flip(path, random.Random(0), offset=at + 3, bit=0x40)


def test_evaluate_refuses_a_checkpoint_with_a_flipped_weight(mqar, trained, tmp_path, capsys):
    from align_mamba.recall.evaluate import main as evaluate_main

    damaged = tmp_path / "model.pt"
    damaged.write_bytes(trained.read_bytes())
    _flip_a_weight(damaged)
    argv = [
        "--checkpoint",
        str(damaged),
        "--data",
        str(mqar),
        "--out",
        str(tmp_path / "m.json"),
        "--backend",
        "reference",
        "--device",
        "cpu",
    ]
    _one_error_line(capsys, run_cli(evaluate_main, argv), str(damaged))
    assert not (tmp_path / "m.json").exists()


def test_scan_refuses_a_tagger_with_a_flipped_weight(tmp_path, capsys):
    from align_mamba.cli import main as cli_main
    from align_mamba.secrets.infer import save_tagger
    from align_mamba.secrets.tagger import ByteTagger, TaggerConfig

    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_tagger(
        path,
        ByteTagger(
            TaggerConfig(d_model=16, n_layers=1, d_state=8, headdim=8, chunk_size=16),
            "reference",
            2,
            ("none", "github_classic"),
        ),
        {"threshold": 0.5, "min_span_len": 4, "chunk_len": 64, "overlap": 16},
    )
    _flip_a_weight(path)
    (tmp_path / "a.txt").write_text("token = 'abcdefgh'\n")
    code = cli_main(["scan", str(tmp_path / "a.txt"), "--checkpoint", str(path), "--device", "cpu"])
    _one_error_line(capsys, code, str(path))


def test_a_truncated_resume_point_is_set_aside_or_one_line(mqar, tmp_path, capsys):
    from align_mamba.recall.train import main as train_main

    out = tmp_path / "cell"
    _kill(
        _module("align_mamba.recall.train", _train_argv(mqar, out)),
        out,
        until=lambda: (out / "resume" / "last.pt").exists(),
    )
    last = out / "resume" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    code = run_cli(train_main, _train_argv(mqar, out))
    if code == 0:  # moved aside with a warning, trained afresh
        assert _check_train_outputs(out)["steps_run"] == 30
    else:  # or one line saying what to delete
        _one_error_line(capsys, code, "last.pt")
        assert not (out / "model.pt").exists()


# ---- two writers ----------------------------------------------------------------------------------


def test_a_second_trainer_into_the_same_folder_fails_at_once_naming_the_first(mqar, tmp_path, capsys):
    from align_mamba.recall.train import main as train_main

    out = tmp_path / "cell"
    first = subprocess.Popen(
        _module("align_mamba.recall.train", _train_argv(mqar, out, steps=100_000)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(lambda: _held(out), "the first trainer to lock", first)
        started = time.monotonic()
        code = run_cli(train_main, _train_argv(mqar, out))
        line = _one_error_line(capsys, code, "is being written by")
        assert time.monotonic() - started < 30, "the second writer must fail before doing any work"
        match = LOCK_LINE.fullmatch(line)
        assert match and int(match["pid"]) == first.pid and match["out"] == str(out), line
        assert first.poll() is None, "the first writer goes on"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with output_lock(out):  # kill -9 released it: the kernel drops a dead process's flock
        pass
    assert not lock_path(out).exists()


STAGES = {
    "recall.train": ("align_mamba.recall.train", lambda out: ["--data", "d", "--out", str(out)]),
    "recall.evaluate": (
        "align_mamba.recall.evaluate",
        lambda out: ["--checkpoint", "m.pt", "--data", "d", "--out", str(out)],
    ),
    "recall.data": (
        "align_mamba.recall.data",
        lambda out: [
            "--out",
            str(out),
            "--num-pairs",
            "4",
            "--seq-len",
            "16",
            "--num-queries",
            "all",
            "--train-size",
            "8",
            "--val-size",
            "2",
            "--test-size",
            "2",
            "--seed",
            "0",
        ],
    ),
    "secrets.train": ("align_mamba.secrets.train", lambda out: ["--data", "d", "--out", str(out)]),
    "secrets.evaluate": (
        "align_mamba.secrets.evaluate",
        lambda out: ["--data", "d", "--checkpoint", "m.pt", "--out", str(out)],
    ),
    "secrets.data": ("align_mamba.secrets.data.__main__", lambda out: ["--out", str(out), "--seed", "0"]),
}


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """An output whose lock another process holds (a bare holder: no torch start-up)."""
    out = tmp_path_factory.mktemp("held") / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from align_mamba.core.lock import "
            "output_lock\nwith output_lock(sys.argv[1]):\n    print('held', flush=True); "
            "time.sleep(600)",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    yield out, holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()


@pytest.mark.parametrize("stage", STAGES)
def test_every_writing_stage_takes_the_output_lock(stage, held, capsys):
    import importlib

    out, pid = held
    module, argv = STAGES[stage]
    code = run_cli(importlib.import_module(module).main, argv(out))
    line = _one_error_line(capsys, code, f"pid {pid} on ")
    assert LOCK_LINE.fullmatch(line), line
    assert not out.exists(), "the refused writer wrote nothing"
