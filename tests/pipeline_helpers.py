"""Shared by the pipeline tests: a disposable copy of the project and the two orchestrators' DAGs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src"]


def project_copy(dest: Path, params: Path | None = None, dvc: bool = False) -> Path:
    """Copy what the workflows need into `dest`; optionally swap params.yaml and `dvc init`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    if params is not None:
        shutil.copy2(params, dest / "params.yaml")
    if dvc:
        run(["git", "init", "-q"], dest)
        run(["dvc", "init", "-q"], dest)
        run(["dvc", "config", "core.autostage", "false"], dest)
    return dest


def run(command: list[str], cwd: Path, check: bool = True, timeout: int = 2400) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=timeout)


def _normalize(command: str) -> str:
    return " ".join(command.split())


def snakemake_dag(workdir: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """{output path: (shell command, input paths)} for every job Snakemake would run."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import DAGSettings, OutputSettings, ResourceSettings

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=1), snakefile=workdir / "Snakefile", workdir=workdir
            )
            workflow = workflow_api.dag(dag_settings=DAGSettings(forceall=True)).workflow_api._workflow
            workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
            workflow._build_dag()
            jobs = [job for job in workflow.dag.jobs if job.rule.name != "all"]
            return {
                str(out): (_normalize(job.shellcmd), frozenset(map(str, job.input)))
                for job in jobs
                for out in job.output
            }
    finally:
        os.chdir(cwd)


def dvc_dag(workdir: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """The same map from DVC's stages; a directory dep stands for the stage outputs beneath it."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        stages = list(repo.index.stages)
        outputs = {out.def_path for stage in stages for out in stage.outs}

        def expand(dep: str) -> set[str]:
            beneath = {out for out in outputs if out.startswith(dep.rstrip("/") + "/")}
            return beneath or {dep}

        def inputs(stage) -> frozenset[str]:  # params are compared through the command line
            files = [dep for dep in stage.deps if not isinstance(dep, ParamsDependency)]
            return frozenset().union(*(expand(dep.def_path) for dep in files))

        return {out.def_path: (_normalize(stage.cmd), inputs(stage)) for stage in stages for out in stage.outs}
