# Loads params.yaml through the package's typed tree (one line naming the key on a bad value, before
# any job starts) and lists every job from align_mamba.pipeline.stages: the same commands, inputs and
# outputs dvc.yaml holds. Rules look their job up by wildcards; nothing here spells a command.
import json
import os
import sys
from pathlib import Path

from align_mamba.core import mps
from align_mamba.core.errors import ConfigError
from align_mamba.pipeline import PARAMS_FILE, VALIDATED, dvc_yaml, stages

try:
    from align_mamba.core.params import read_yaml
    from align_mamba.params import build_params

    # the values as written (each rule's settings) and the typed tree built from them: one read
    _RAW_PARAMS = read_yaml(Path(PARAMS_FILE))
    PARAMS = build_params(_RAW_PARAMS, PARAMS_FILE)
except ConfigError as err:
    sys.exit(f"error: {err}")

JOBS = {}
for _stage in stages(PARAMS):
    JOBS.setdefault(_stage.rule, {})[_stage.key] = _stage

# dvc.yaml follows params.yaml: regenerated here when a Snakemake user changed the experiments, so
# both orchestrators keep running the same jobs (DVC's first stage refuses a stale one).
_dvc = Path("dvc.yaml")
_expected = dvc_yaml(PARAMS)
if _dvc.exists() and _dvc.read_text() != _expected:
    _dvc.write_text(_expected)
    print("dvc.yaml regenerated from params.yaml", file=sys.stderr)

USES_GPU = 1 if PARAMS.recall.run.device == "cuda" else 0
# The benchmark times the GPU alone: on device cuda it holds every GPU slot of the run.
BENCH_GPU = 1 if PARAMS.bench.device == "cuda" else 0
_slots = workflow.global_resources.get("gpu_slots")
BENCH_GPU_SLOTS = BENCH_GPU * (_slots if isinstance(_slots, int) else 1)


def job(rule_name, key=""):
    return JOBS[rule_name][key]


def inputs(stage):
    """A job's inputs. The validation marker counts by existence only (its content never changes, as
    in DVC), and so do the validate job's own inputs: Snakemake has checked params.yaml (and rewritten
    dvc.yaml) while parsing this file, and a validate job rerun after an edit would hide the edit.
    Below a job that must rerun, Snakemake skips the checks (settings, code, input times) of every
    job linked to it by ancient files only."""
    if stage.rule == "validate":
        return [ancient(path) for path in stage.deps]
    return [ancient(path) if path == VALIDATED else path for path in stage.deps]


def settings(stage):
    """The values of the params.yaml keys `stage` reads (its DVC params), as one string. A rule's
    params are part of what Snakemake compares with a job's last run, so a job whose settings changed
    reruns, as DVC reruns such a stage, and one whose settings did not stays done."""
    values = {}
    for key in stage.params:
        node = _RAW_PARAMS
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[key] = node
    return json.dumps(values, sort_keys=True)


def cell_job(rule_name):
    """The job of `rule_name` for the cell named by the {arch}/{stem} wildcards."""
    return lambda wildcards: JOBS[rule_name][f"{wildcards.arch}/{wildcards.stem}"]


wildcard_constraints:
    num_pairs=r"\d+",
    arch=r"[A-Za-z0-9_.-]+",
    stem=r"np\d+-ds\d+-lr[0-9.e+-]+-s\d+(-x[0-9a-f]{6})?",
    tagger="|".join(JOBS["secrets_train"]),


# CUDA MPS while cells share the GPU (align_mamba.core.mps): started where jobs run here, on device
# cuda, several at once (the gpu-node profile), stopped at the end by the run that started it.
_MPS_SCRIPT = Path(workflow.basedir) / "tools" / "mps.sh"
_MPS_STARTED = []


onstart:
    if mps.wanted(USES_GPU, _slots, workflow.local_exec, os.environ):
        started, message = mps.start(_MPS_SCRIPT, os.environ)  # the jobs inherit the client variables
        _MPS_STARTED.append(started)
        logger.info(message)


onerror:
    if any(_MPS_STARTED):
        mps.stop(_MPS_SCRIPT)


onsuccess:
    if any(_MPS_STARTED):
        mps.stop(_MPS_SCRIPT)
    # Snakemake's results become DVC's record too, without rerunning, so `dvc status` is clean.
    # Only stages whose outputs all exist are committed (a partial run leaves the rest), and a
    # failure here is a warning: the run itself succeeded. A node without DVC says so and goes on.
    if Path(".dvc").is_dir():
        import subprocess
        try:
            subprocess.run([sys.executable, "-m", "align_mamba.core.dvc_commit"], check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            logger.warning(f"DVC's record was not updated ({err}); run `dvc commit --force STAGE...` by hand")
