"""Claiming GPUs on one machine: round robin over slot files, freed when a claim's process ends."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from align_mamba.core.errors import ConfigError
from align_mamba.core.gpu_slots import claim, select_gpu


def test_claims_fill_every_gpu_before_doubling_up(tmp_path):
    held = [claim(3, tmp_path) for _ in range(7)]
    assert [gpu for gpu, _ in held] == [0, 1, 2, 0, 1, 2, 0]
    for _, handle in held:
        handle.close()


def test_a_closed_claim_frees_its_gpu_for_the_next_job(tmp_path):
    held = [claim(2, tmp_path) for _ in range(4)]  # GPUs 0, 1, 0, 1
    held[1][1].close()
    gpu, handle = claim(2, tmp_path)
    assert gpu == 1 and handle.name.endswith("gpu1-slot0")
    for _, h in [*held[:1], *held[2:], (gpu, handle)]:
        h.close()


def test_a_killed_process_releases_its_claim(tmp_path):
    script = (
        "import sys, time; from pathlib import Path; from align_mamba.core.gpu_slots import claim; "
        "held = claim(2, Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        gpu, handle = claim(2, tmp_path)
        assert gpu == 1  # the child holds GPU 0's first slot
        handle.close()
    finally:
        child.kill()
        child.wait()
    deadline = time.time() + 10
    while True:
        gpu, handle = claim(2, tmp_path)
        handle.close()
        if gpu == 0 or time.time() > deadline:
            break
    assert gpu == 0


def test_devices_that_need_no_claim_are_returned_unchanged():
    for device in (torch.device("cpu"), torch.device("cuda", 0)):
        assert select_gpu(device) == device


def test_an_unusable_slot_folder_is_one_clear_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="ALIGN_MAMBA_GPU_LOCKS to a writable folder"):
        claim(2, tmp_path / "a-file" / "slots")
