"""Write the study's report: `python -m align_mamba.report --params params.yaml --cells DIR --out DIR
[--bench DIR] [--secrets DIR]`.

With --params the report reads exactly the cells of its experiments (CELLS/<id>.json, and
<id>.confirm.json of a 2x-budget rerun beside it) and opens each experiment's section with its
hypotheses (--partial: a study under way, whose missing cells are listed as not run, never
filled in); without it, --cells is searched recursively for metrics files of
`python -m align_mamba.recall.evaluate` (other JSON files are skipped). --bench (outputs of `python -m align_mamba.bench`, and
scan_throughput.csv of `python -m align_mamba.secrets.throughput`) and --secrets (DIR/<tagger>/ of
`python -m align_mamba.secrets.evaluate`, DIR/baselines/ of `python -m align_mamba.secrets.baselines`)
each add a section; a folder without results gives that section one line on how to produce them.
Writes report.md, report.html (self-contained), figures/*.png, cells.csv (one row per cell) and
metrics.json (headline numbers per experiment for `dvc exp show`, rounded; null: no capacity).
"""

from __future__ import annotations

import logging
from pathlib import Path

from align_mamba.core.cli import OneLineParser, flag_names, setup_logging
from align_mamba.core.errors import run_cli
from align_mamba.params import load_params
from align_mamba.report.render import write_report

log = logging.getLogger("align_mamba.report")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.report", description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=Path, required=True, help="folder searched recursively for metrics JSON")
    parser.add_argument("--out", type=Path, required=True, help="folder the report is written into")
    parser.add_argument(
        "--params", type=Path, help="params.yaml: report exactly its experiments' cells (CELLS/<id>.json)"
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="with --params: a study under way; cells without a metrics file are listed as not run",
    )
    # both spellings: DVC unpacks params.yaml's `report: {capacity_threshold: ...}` as --capacity_threshold
    parser.add_argument(
        *flag_names("capacity_threshold"),
        dest="capacity_threshold",
        type=float,
        help="test accuracy a seed must reach at a num_pairs to have learned it, in (0, 1] "
        "(default: params.yaml's report.capacity_threshold, else 0.9)",
    )
    parser.add_argument(
        *flag_names("bench"),
        dest="bench",
        type=Path,
        help="benchmark folder (python -m align_mamba.bench --out DIR): adds the benchmark section",
    )
    parser.add_argument(
        *flag_names("secrets"),
        dest="secrets",
        type=Path,
        help="secret-span results (DIR/<tagger>/, DIR/baselines/): adds the secret-span section",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log)
    if args.partial and args.params is None:
        parser.error("--partial needs --params (the study whose missing cells it lists)")
    recall = taggers = None
    if args.params is not None:
        params = load_params(args.params)
        recall, taggers = params.recall, [tagger.name for tagger in params.secrets.taggers]
    metrics = write_report(
        args.cells,
        args.out,
        args.capacity_threshold,
        recall=recall,
        bench_dir=args.bench,
        secrets_dir=args.secrets,
        taggers=taggers,
        partial=args.partial,
    )
    log.info("report of %d cells written to %s (report.md, report.html)", metrics["cells"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
