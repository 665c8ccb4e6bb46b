"""align_mamba.core.mps: when a run starts a CUDA MPS daemon, and how its client variables reach
the jobs (a stand-in script for tools/mps.sh: the CPU has no daemon to start)."""

from __future__ import annotations

import pytest

from align_mamba.core import mps


@pytest.mark.parametrize(
    ("uses_gpu", "slots", "local", "env", "expected"),
    [
        (1, 8, True, {}, True),  # the gpu-node profile on a GPU machine
        (0, 8, True, {}, False),  # cells on the CPU
        (1, 1, True, {}, False),  # one cell at a time: nothing to share
        (1, None, True, {}, False),  # no gpu_slots resource (the default profile)
        (1, 8, False, {}, False),  # jobs on other nodes (SLURM)
        (1, 8, True, {"ALIGN_MAMBA_MPS": "off"}, False),  # the caller manages MPS
        (1, 8, True, {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/x"}, False),  # a daemon already serves this run
    ],
)
def test_a_run_starts_mps_only_for_cells_packed_here_on_a_gpu(uses_gpu, slots, local, env, expected):
    assert mps.wanted(uses_gpu, slots, local, env) is expected


def test_start_puts_the_daemons_variables_into_the_environment_and_stop_calls_the_script(tmp_path):
    calls = tmp_path / "calls"
    script = tmp_path / "mps.sh"
    script.write_text(
        f"echo $1 >> {calls}\n"
        'if [ "$1" = start ]; then echo "mps: daemon started" >&2; '
        'echo "export CUDA_MPS_PIPE_DIRECTORY=/tmp/p CUDA_MPS_LOG_DIRECTORY=/tmp/l"; fi\n'
    )
    env: dict[str, str] = {}
    assert mps.start(script, env) == (True, "mps: daemon started")
    assert env == {"CUDA_MPS_PIPE_DIRECTORY": "/tmp/p", "CUDA_MPS_LOG_DIRECTORY": "/tmp/l"}
    mps.stop(script)
    assert calls.read_text().split() == ["start", "stop"]


def test_a_machine_without_mps_is_one_line_and_nothing_changes(tmp_path):
    script = tmp_path / "mps.sh"
    script.write_text('echo "mps: nvidia-cuda-mps-control not found; running without MPS" >&2\n')
    env = {"PATH": "/bin"}
    assert mps.start(script, env) == (False, "mps: nvidia-cuda-mps-control not found; running without MPS")
    assert env == {"PATH": "/bin"}
