"""Join benchmark runs made in several sittings: `python -m align_mamba.bench.merge --out DIR RUN_DIR...`.

A GPU session's time limit can split one benchmark into runs (the mixers in one, the architectures
or the training ladder in another). The merged folder has every run's mixers.csv rows, the one
non-empty train_step.csv, and a summary.json recomputed from the joined rows; runs from different
devices or library versions are refused, so every row of the result shares its provenance.
A run stopped by a time limit keeps its mixers.csv (rewritten after every case) but has no
summary.json; `--provenance-from RUN` vouches that it ran in the same session as RUN, whose
device and versions it then takes (its config is recorded as unknown).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from align_mamba.bench.summary import _finite_or_none, crossovers, training_speedup, wrapper_tax
from align_mamba.core.atomic import atomic_write_json, atomic_write_text
from align_mamba.core.cli import OneLineParser, setup_logging
from align_mamba.core.errors import ConfigError, DataIntegrityError, run_cli

PROVENANCE = ("device", "device_type", "dtype", "versions")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _read_run(directory: Path, provenance: dict | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    try:
        mixers = pd.read_csv(directory / "mixers.csv", keep_default_na=False, na_values=[""])
        ladder = _read_csv(directory / "train_step.csv")
        if (directory / "summary.json").is_file():
            return mixers, ladder, json.loads((directory / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise DataIntegrityError(f"{directory} is not a benchmark run ({err})") from None
    if provenance is None:
        raise DataIntegrityError(
            f"{directory} has no summary.json (a run stopped early?): name the run of the same "
            "session it belongs with in --provenance-from"
        )
    return mixers, ladder, {**{key: provenance[key] for key in PROVENANCE}, "config": None}


def merge_runs(directories: list[Path], provenance_from: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(mixers, ladder, summary) of the runs in `directories`, which must share device and versions."""
    provenance = json.loads((provenance_from / "summary.json").read_text()) if provenance_from else None
    runs = [_read_run(directory, provenance) for directory in directories]
    first = runs[0][2]
    for directory, (_, _, summary) in zip(directories, runs):
        differs = [key for key in PROVENANCE if summary.get(key) != first.get(key)]
        if differs:
            raise ConfigError(f"{directory} differs from {directories[0]} in {', '.join(differs)}: not one setup")
    ladders = [ladder for _, ladder, _ in runs if not ladder.empty]
    if len(ladders) > 1:
        raise ConfigError("more than one run holds a training ladder; merge runs with at most one")
    mixers = pd.concat([m for m, _, _ in runs if not m.empty], ignore_index=True).astype({"d_state": "Int64"})
    ladder = ladders[0] if ladders else runs[0][1]
    summary = _finite_or_none(
        {
            **{key: first[key] for key in PROVENANCE},
            "rows": {status: int((mixers["status"] == status).sum()) for status in ("ok", "oom", "skipped")},
            "wrapper_tax": wrapper_tax(mixers),
            "crossover": crossovers(mixers),
            "training_speedup": training_speedup(ladder.to_dict("records")),
            "config": [summary["config"] for _, _, summary in runs],
            "merged_from": [str(directory) for directory in directories],
            "provenance_from": str(provenance_from) if provenance_from else None,
        }
    )
    return mixers, ladder, summary


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.bench.merge", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the merged mixers.csv, train_step.csv, summary.json"
    )
    parser.add_argument(
        "--provenance-from",
        "--provenance_from",
        dest="provenance_from",
        type=Path,
        help="a complete run of the same session, for runs without summary.json",
    )
    parser.add_argument("runs", type=Path, nargs="+", help="benchmark output folders")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    mixers, ladder, summary = merge_runs(args.runs, args.provenance_from)
    atomic_write_text(args.out / "mixers.csv", mixers.to_csv(index=False))
    atomic_write_text(args.out / "train_step.csv", ladder.to_csv(index=False))
    atomic_write_json(args.out / "summary.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
