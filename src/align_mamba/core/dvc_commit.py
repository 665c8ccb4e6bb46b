"""Record what Snakemake made in DVC: `python -m align_mamba.core.dvc_commit [ROOT]`.

The Snakefile's `onsuccess` runs this, so that after a Snakemake run `dvc status` agrees without
rerunning anything. A bare `dvc commit --force` commits every stage of dvc.yaml and fails as soon as
one stage's outputs are missing, which after a partial run (`snakemake data/mqar/np4`) they always
are. So this commits by name only the stages whose dependencies and outputs all exist, and reports the
rest as left for later. It exits 0 when it committed what it could (possibly nothing) and 1 when
`dvc commit` itself failed; the hook turns that into a warning: the Snakemake run already succeeded,
and its outputs are intact either way.

DVC's Python API is used when this interpreter has it; otherwise the `dvc` command commits every stage
(and may fail after a partial run, which the hook reports).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("align_mamba.core.dvc_commit")


def finished_stages(root: Path) -> tuple[list[str], list[str]]:
    """(stages whose deps and outs all exist, the other stages), by DVC name (`train@mamba2-...`)."""
    from dvc.repo import Repo

    done, pending = [], []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            paths = [entry.fs_path for entry in (*stage.deps, *stage.outs)]
            (done if all(os.path.exists(path) for path in paths) else pending).append(stage.addressing)
    return done, pending


def _dvc_command() -> list[str] | None:
    """How to run DVC's CLI: this interpreter's module if it has one, else `dvc` on PATH, else None."""
    try:
        import dvc  # noqa: F401

        return [sys.executable, "-m", "dvc"]
    except ImportError:
        return ["dvc"] if shutil.which("dvc") else None


def commit_finished(root: Path) -> int:
    """Commit the finished stages under `root`; 0 when done (or nothing to do), 1 when `dvc commit` failed."""
    command = _dvc_command()
    if command is None:
        log.warning("dvc is not installed here: run `dvc commit --force` where it is")
        return 0
    targets: list[str] = []
    if command[0] == sys.executable:
        done, pending = finished_stages(root)
        if not done:
            log.info("no DVC stage has all its outputs yet: nothing to commit")
            return 0
        targets = done
        if pending:
            log.info("committing %d finished DVC stage(s); %d not yet run stay uncommitted", len(done), len(pending))
    result = subprocess.run(
        [*command, "commit", "--force", "--quiet", *targets], cwd=root, capture_output=True, text=True
    )
    if result.returncode != 0:
        reason = " ".join((result.stderr or result.stdout).split()) or f"exit status {result.returncode}"
        log.warning("dvc commit failed, DVC's record is not updated (the outputs are intact): %s", reason)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return commit_finished(Path(argv[0]) if argv else Path.cwd())


if __name__ == "__main__":
    raise SystemExit(main())
