"""Record what Snakemake made in DVC: `python -m align_mamba.core.dvc_commit [ROOT]`.

The Snakefile's `onsuccess` runs this, so that after a Snakemake run `dvc status` agrees without
rerunning anything. A bare `dvc commit --force` commits every stage of dvc.yaml and fails as soon as
one stage's outputs are missing, which after a partial run (`snakemake data/mqar/np4`) they always
are. So this commits by name only the stages whose dependencies and outputs all exist, and reports the
rest as left for later. It exits 0 when it committed what it could (possibly nothing) and 1 when
`dvc commit` itself failed; the hook turns that into a warning: the Snakemake run already succeeded,
and its outputs are intact either way.

DVC's Python API is used when this interpreter has it, in one pass (dvc.yaml and dvc.lock read once,
the lock written once); otherwise the `dvc` command commits every stage (and may fail after a partial
run, which the hook reports).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("align_mamba.core.dvc_commit")


def _is_finished(stage) -> bool:
    return all(os.path.exists(entry.fs_path) for entry in (*stage.deps, *stage.outs))


def _commit_in_process(root: Path) -> int:
    """Commit the finished stages through DVC's API: dvc.yaml and dvc.lock are read once and the lock
    written once. `dvc commit STAGE...` reloads both for every stage named, which for the default
    grid's ~80 stages took minutes, longer than the run it records."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    # what `dvc commit --quiet` shows: errors only (hashing warns once per empty dependency file)
    logging.getLogger("dvc").setLevel(logging.ERROR)
    with Repo(str(root)) as repo, repo.lock:
        stages = list(repo.index.stages)
        done = [stage for stage in stages if _is_finished(stage)]
        if not done:
            log.info("no DVC stage has all its outputs yet: nothing to commit")
            return 0
        if len(done) < len(stages):
            log.info(
                "committing %d finished DVC stage(s); %d not yet run stay uncommitted",
                len(done),
                len(stages) - len(done),
            )
        try:
            by_file: dict[str, tuple] = {}
            for stage in done:
                stage.save()
                stage.commit()
                by_file.setdefault(stage.dvcfile.path, (stage.dvcfile, []))[1].append(stage)
            for dvcfile, group in by_file.values():
                dvcfile.dump_stages(group, update_pipeline=False)
        except DvcException as err:
            log.warning("dvc commit failed, DVC's record is not updated (the outputs are intact): %s", err)
            return 1
    return 0


def commit_finished(root: Path) -> int:
    """Commit the finished stages under `root`; 0 when done (or nothing to do), 1 when the commit failed."""
    try:
        import dvc  # noqa: F401
    except ImportError:
        return _commit_with_cli(root)
    return _commit_in_process(root)


def _commit_with_cli(root: Path) -> int:
    """Without DVC's module: `dvc commit --force` of every stage (fails after a partial run)."""
    if shutil.which("dvc") is None:
        log.warning("dvc is not installed here: run `dvc commit --force` where it is")
        return 0
    result = subprocess.run(["dvc", "commit", "--force", "--quiet"], cwd=root, capture_output=True, text=True)
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
