# Loads params.yaml, validates it (JSON schema, then the package's typed config) before any job
# starts, and exposes the grid. Commands come from align_mamba.pipeline, the same strings dvc.yaml runs.
import shutil
import sys
from pathlib import Path

from align_mamba.errors import ConfigError
from align_mamba.pipeline import (Cell, cells, check_params, data_command, data_dir, evaluate_command,
                                  report_command, train_command)


configfile: "params.yaml"


try:
    check_params(config)
except ConfigError as err:
    sys.exit(f"error: {err}")

CELLS = {(cell.name, cell.stem): cell for cell in cells(config)}
USES_GPU = 1 if config["run"]["device"] == "cuda" else 0
DATA_CODE = ["src/align_mamba/data"]
MODEL_CODE = ["src/align_mamba/models", "src/align_mamba/mixers", "src/align_mamba/config.py",
              "src/align_mamba/backends.py", "src/align_mamba/checkpoint.py"]
TRAIN_CODE = ["src/align_mamba/train.py", "src/align_mamba/evaluate.py", *MODEL_CODE]
EVALUATE_CODE = ["src/align_mamba/evaluate.py", *MODEL_CODE]
REPORT_CODE = ["src/align_mamba/report"]


def cell_of(wildcards) -> Cell:
    return CELLS[(wildcards.arch, wildcards.stem)]


wildcard_constraints:
    num_pairs=r"\d+",
    arch=r"[A-Za-z0-9_.-]+",
    stem=r"np\d+-ds\d+-s\d+",


onsuccess:
    # Snakemake's results become DVC's record too, without rerunning, so `dvc status` is clean.
    # A GPU node without DVC (results copied back by hand) skips it, and says so.
    if Path(".dvc").is_dir() and shutil.which("dvc"):
        shell("dvc commit --force --quiet")
    elif Path(".dvc").is_dir():
        logger.warning("dvc is not installed here: run `dvc commit --force` where it is")
