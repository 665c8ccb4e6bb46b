# Loads params.yaml, validates it (JSON schema, then the package's typed config) before any job
# starts, and exposes the grid. Commands come from align_mamba.pipeline, the same strings dvc.yaml runs.
import shutil
import sys
from pathlib import Path

from align_mamba.core.errors import ConfigError
from align_mamba.pipeline import (BENCH_DIR, SECRETS_DATA, SECRETS_RESULTS, Cell, bench_command, cells,
                                  check_params, data_command, data_dir, evaluate_command, report_command,
                                  scan_throughput_command, secrets_baselines_command, secrets_data_command,
                                  secrets_evaluate_command, secrets_train_command, tagger_dir, train_command)


configfile: "params.yaml"


try:
    check_params(config)
except ConfigError as err:
    sys.exit(f"error: {err}")

CELLS = {(cell.name, cell.stem): cell for cell in cells(config)}
TAGGERS = {tagger["name"]: tagger for tagger in config["secrets"]["taggers"]}
USES_GPU = 1 if config["run"]["device"] == "cuda" else 0
# The benchmark times the GPU alone: on device cuda it holds every GPU slot of the run.
BENCH_GPU = 1 if config["bench"]["device"] == "cuda" else 0
_slots = workflow.global_resources.get("gpu_slots")
BENCH_GPU_SLOTS = BENCH_GPU * (_slots if isinstance(_slots, int) else 1)
DATA_CODE = ["src/align_mamba/recall/mqar.py", "src/align_mamba/recall/storage.py", "src/align_mamba/recall/data.py"]
MODEL_CODE = ["src/align_mamba/recall/models", "src/align_mamba/mixers", "src/align_mamba/recall/config.py",
              "src/align_mamba/core/backends.py", "src/align_mamba/recall/checkpoint.py"]
TRAIN_CODE = ["src/align_mamba/recall/train.py", "src/align_mamba/recall/evaluate.py", *MODEL_CODE]
EVALUATE_CODE = ["src/align_mamba/recall/evaluate.py", *MODEL_CODE]
REPORT_CODE = ["src/align_mamba/report"]
BENCH_CODE = ["src/align_mamba/bench", *MODEL_CODE]
SECRETS_MODEL_CODE = ["src/align_mamba/secrets", "src/align_mamba/mixers", "src/align_mamba/recall/models",
                      "src/align_mamba/recall/config.py", "src/align_mamba/core/backends.py"]
SECRETS_DATA_CODE = ["src/align_mamba/secrets/data", "src/align_mamba/secrets/spans.py"]


def cell_of(wildcards) -> Cell:
    return CELLS[(wildcards.arch, wildcards.stem)]


wildcard_constraints:
    num_pairs=r"\d+",
    arch=r"[A-Za-z0-9_.-]+",
    stem=r"np\d+-ds\d+-s\d+",
    tagger="|".join(TAGGERS),


onsuccess:
    # Snakemake's results become DVC's record too, without rerunning, so `dvc status` is clean.
    # Only stages whose outputs all exist are committed (a partial run leaves the rest), and a
    # failure here is a warning: the run itself succeeded. A node without DVC says so and goes on.
    if Path(".dvc").is_dir():
        import subprocess
        try:
            subprocess.run([sys.executable, "-m", "align_mamba.core.dvc_commit"], check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            logger.warning(f"DVC's record was not updated ({err}); run `dvc commit --force STAGE...` by hand")
