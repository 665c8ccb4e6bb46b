"""`snakemake --cores all --profile slurm`, as the README tells a cluster user, on a real Slurm.

A tiny grid (two cells) goes through the repository's `slurm` profile, linked where `--profile slurm`
looks, in a scratch copy of the project. Every job must reach Slurm through sbatch, and the cells'
metrics, training summaries and per-step losses must equal those of a plain local run of the same
targets in a second copy (the tiny cells score 0 accuracy, so the losses carry the comparison).

The Slurm is whatever controller already answers `squeue`; otherwise a single-node one that
tools/slurm_local.sh starts here (root, Slurm installed) and stops again. Without either, the test
is skipped, unless ALIGN_MAMBA_REQUIRE_SLURM=1 (set by .ci/run, which installs Slurm) makes that a
failure, so CI cannot pass by skipping it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import ROOT, project_copy

pytestmark = pytest.mark.slow

SLURM_LOCAL = ROOT / "tools" / "slurm_local.sh"
# Two cells of one dataset, trained for a few steps: three rounds of jobs (data, train, evaluate).
RUNS = ["mamba2/np4-ds8-lr0.003-s0", "hybrid-0/np4-ds8-lr0.003-s0"]
CELLS = [f"results/cells/{run}.json" for run in RUNS]
# Of the outputs, only these wall-clock fields differ between two runs on one machine (device,
# backend, host-free summaries and the loss of every step are equal).
TIMING_FIELDS = {"results/cells/{}.json": "wall_seconds", "runs/{}/train.json": "wall_seconds_this_run"}
# The account of the cluster that tools/slurm_local.sh starts (it has no accounting database).
LOCAL_ACCOUNT = "local"


def _tiny_params(dest: Path) -> Path:
    params = yaml.safe_load((ROOT / "workflow" / "presets" / "tiny.yaml").read_text())
    names = [arch["name"] for arch in params["architectures"][:2]]
    params["experiments"] = {
        "tiny": {
            "architectures": names,
            "num_pairs": [4],
            "d_state": [8],
            "seeds": [0],
            "lrs": [3.0e-3],
            "confirm": "none",
        }
    }
    params["data"].update(train_size=256, val_size=64, test_size=64)
    params["train"].update(steps=20, warmup_steps=5, eval_every=10, checkpoint_every=10)
    dest.write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def _unavailable(reason: str) -> None:
    if os.environ.get("ALIGN_MAMBA_REQUIRE_SLURM") == "1":
        pytest.fail(f"ALIGN_MAMBA_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _controller_answers() -> bool:
    if shutil.which("squeue") is None:
        return False
    try:
        return subprocess.run(["squeue", "-h"], check=False, capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:  # a configured controller that does not answer
        return False


@pytest.fixture(scope="session")
def slurm_account(tmp_path_factory):
    """A Slurm controller that takes jobs, and the account to name (None: let the site decide).

    The controller started here is stopped afterwards, by PID; one already running is left alone.
    """
    if _controller_answers():
        yield os.environ.get("SBATCH_ACCOUNT")
        return
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        _unavailable("Slurm is not installed (as root: tools/slurm_local.sh install)")
    if os.geteuid() != 0:
        _unavailable("no Slurm controller runs, and starting one needs root (tools/slurm_local.sh start DIR)")
    state = tmp_path_factory.mktemp("slurm")
    try:
        started = subprocess.run(
            [str(SLURM_LOCAL), "start", str(state)], check=False, capture_output=True, text=True, timeout=120
        )
        if started.returncode != 0:
            _unavailable(f"tools/slurm_local.sh could not start Slurm: {started.stderr.strip()}")
        yield LOCAL_ACCOUNT
    finally:
        subprocess.run([str(SLURM_LOCAL), "stop", str(state)], check=False, capture_output=True, timeout=120)


def _env(project: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(project / "src"), "OMP_NUM_THREADS": "1", **extra}


def _outputs(project: Path) -> dict[str, object]:
    """Each cell's metrics, training summary and per-step history, wall-clock fields dropped."""
    outputs = {}
    for run in RUNS:
        for pattern, timing in TIMING_FIELDS.items():
            path = pattern.format(run)
            content = json.loads((project / path).read_text())
            assert timing in content, f"{path} no longer has {timing}: update TIMING_FIELDS"
            outputs[path] = {key: value for key, value in content.items() if key != timing}
        outputs[f"runs/{run}/history.csv"] = (project / "runs" / run / "history.csv").read_text()
    return outputs


def test_slurm_profile_runs_jobs_through_sbatch_and_matches_a_local_run(slurm_account, tmp_path):
    params = _tiny_params(tmp_path / "params.yaml")
    on_slurm = project_copy(tmp_path / "slurm", params)
    local = project_copy(tmp_path / "local", params)
    if slurm_account:  # what the profile asks a user to add (this copy is scratch)
        with (on_slurm / "workflow" / "profiles" / "slurm" / "config.yaml").open("a") as profile:
            profile.write(f"default-resources:\n  - slurm_account={slurm_account}\n")

    # The README's link, under a scratch config dir so the user's ~/.config stays untouched.
    config_home = tmp_path / "config"
    (config_home / "snakemake").mkdir(parents=True)
    (config_home / "snakemake" / "slurm").symlink_to(on_slurm / "workflow" / "profiles" / "slurm")

    # The local run shares the CPU with the Slurm jobs, but the slurm run mostly waits on squeue.
    local_run = subprocess.Popen(
        ["snakemake", "--cores", "2", *CELLS],
        cwd=local,
        env=_env(local),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    cluster = subprocess.run(
        ["snakemake", "--cores", "all", "--profile", "slurm", *CELLS],
        check=False,
        cwd=on_slurm,
        env=_env(on_slurm, XDG_CONFIG_HOME=str(config_home)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    cluster_seconds = time.monotonic() - started
    local_output = local_run.communicate(timeout=900)[0]
    log = cluster.stdout + cluster.stderr
    assert cluster.returncode == 0, log[-4000:]
    assert local_run.returncode == 0, local_output[-4000:]

    # Every job (the params check, 1 dataset, 2 trainings, 2 evaluations) went through sbatch and finished.
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert len(job_ids) == 6, log[-4000:]
    rules = []
    for job_id in job_ids:
        shown = subprocess.run(["scontrol", "show", "job", job_id], check=False, capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in shown, shown
        rules += re.findall(r"Comment=rule_([a-z_]+?)(?:_wildcards_\S*)?\s", shown)
        if slurm_account:
            assert f"Account={slurm_account}" in shown, shown
    assert sorted(rules) == ["evaluate", "evaluate", "mqar_data", "train", "train", "validate"]
    if slurm_account:  # a named account spares the plugin its failing guess
        assert "trying to guess" not in log and "sacct: invalid option" not in log, log[-4000:]
    print(f"slurm run: {cluster_seconds:.0f} s for {len(job_ids)} jobs")

    assert _outputs(on_slurm) == _outputs(local)
