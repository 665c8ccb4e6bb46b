"""Which of a study's cells to run next when GPU time is scarce: the lead-rate rule.

`python -m align_mamba.recall.schedule --params P --cells DIR --order QUEUE --out QUEUE`

The full grid runs every seed at every rate of its sweep. Most of those runs decide nothing: a
seed that learns at one rate has learned, whatever the other rates do. Per grid point
(architecture, its settings, num_pairs, d_state):
- the *lead seed* (the smallest) runs at every rate; the *lead rate* is the one best on its
  validation accuracy (ties to the smaller rate, as the report's selection);
- every other seed runs at the lead rate first, and at the rest of its sweep only if it failed
  there on validation: a seed counts as failed only after every rate failed, as on the full grid;
  a seed that has learned at any rate it ran needs nothing more (the lead rate can move after it
  ran, when the lead seed's sweep grows by a rate);
- a seed that failed at every rate gets its confirm jobs (2x-budget reruns) that will rerun, by
  the confirm stage's own decision from validation, once everything they read has run; what they
  read (`edge`: the adjacent num_pairs at the same rate) is needed too. A seed that learned needs none;
  a rerun that learned counts as its seed learning there (as in the report).
Cells never needed are *skipped* (their seed learned), never run and never filled
in; the report lists them. Only validation accuracy decides; no test number enters. A failed seed
is the same as on the full grid (Snakemake, DVC: every cell); a seed that learned keeps the best of
the rates it ran, so its kept rate and accuracy can differ from the full grid's.

Worked example: rates (1e-3, 3e-3, 1e-2), seeds 0-2, nothing run. Ready: seed 0 at all three
rates. Once those ran with validation 0.40, 0.99, 0.01, the lead rate is 3e-3: ready are seeds 1
and 2 at 3e-3. If seed 1 reaches 0.95 there and seed 2 0.30, seed 1's other two cells are skipped
and seed 2's are ready; once they failed too, seed 2's confirm job (`selected`: its kept rate) is.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from align_mamba.core.atomic import atomic_write_text
from align_mamba.core.cli import OneLineParser, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.recall.confirm import chosen, decide
from align_mamba.recall.confirm import inputs as confirm_inputs
from align_mamba.recall.params import CONFIRM_ID_SUFFIX, Cell, RecallParams, load_recall_params

log = logging.getLogger("align_mamba.recall.schedule")


@dataclass(frozen=True)
class Plan:
    """Cell ids (and `ID.confirm` job ids) by what the lead-rate rule makes of them, in run order.

    ready: needed and decidable now; waiting: needed unless a lead seed's sweep, still running,
    decides otherwise; skipped: not needed (their seed learned, at its point's lead rate or another it ran).
    """

    ready: tuple[str, ...]
    waiting: tuple[str, ...]
    skipped: tuple[str, ...]


def _point(cell: Cell) -> tuple:
    return (cell.architecture, cell.suffix, cell.num_pairs, cell.model.d_state)


def _lead_rate_rule(
    points: Mapping[tuple, list[Cell]], validation: Mapping[str, float], threshold: float
) -> tuple[set[str], set[str]]:
    """(needed, undecided) cell ids: a point's lead seed at every rate, the others at its lead rate,
    and every rate of a seed that failed there; undecided waits on a lead seed or a lead-rate run."""
    needed: set[str] = set()
    undecided: set[str] = set()
    for cells in points.values():
        lead_seed = min(c.train.seed for c in cells)
        lead = [c for c in cells if c.train.seed == lead_seed]
        lead_rate = None
        if all(c.id in validation for c in lead):
            lead_rate = chosen(lead, lambda c: validation[c.id]).train.lr
        learned = {c.train.seed for c in cells if validation.get(c.id, 0.0) >= threshold}
        for cell in cells:
            at_lead = next((c.id for c in cells if c.train.seed == cell.train.seed and c.train.lr == lead_rate), None)
            if cell.train.seed == lead_seed:
                needed.add(cell.id)
            elif cell.train.seed in learned:
                # settled: it learned at a rate it ran (one run before the lead rate was known,
                # or before the lead seed's sweep grew); another rate cannot undo that
                continue
            elif cell.id == at_lead:
                needed.add(cell.id)
            elif at_lead is None or at_lead not in validation:
                undecided.add(cell.id)
            elif validation[at_lead] < threshold:
                needed.add(cell.id)
    return needed, undecided


def plan(
    params: RecallParams,
    validation: Mapping[str, float],
    confirmed: set[str],
    order: Iterable[str] = (),
    reruns: Mapping[str, float] | None = None,
) -> Plan:
    """The lead-rate rule over `params.cells`.

    validation: best validation accuracy of every cell run so far, by id; confirmed: ids whose
    confirm job has written its file; order: ids in the order to run them (cells it leaves out
    follow in params order); reruns: the best validation accuracy of each 2x-budget rerun that ran.
    A rerun stands in for its cell (as in the report): a seed whose rerun learned has learned, and
    the lead rate is the best of the lead seed's deciding runs. Which confirm jobs will rerun is
    still decided from the 1x runs, as the confirm stage decides it.
    """
    threshold = params.report.capacity_threshold
    by_id = {cell.id: cell for cell in params.cells}
    points: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in params.cells:
        points[_point(cell)].append(cell)
    final = {**validation, **(reruns or {})}
    needed, undecided = _lead_rate_rule(points, final, threshold)

    def failed(cell: Cell) -> bool:
        return cell.id in final and final[cell.id] < threshold

    def to_confirm() -> list[Cell]:
        """The needed failures of seeds that failed at every needed rate of their point."""
        return [
            cell
            for cell in map(by_id.get, needed)
            if failed(cell)
            and cell.confirm_modes(params)
            and all(failed(c) for c in points[_point(cell)] if c.train.seed == cell.train.seed and c.id in needed)
        ]

    # What those confirm jobs read is needed too, and so is what the confirm jobs of its own failed
    # seeds read: a fixed point, each round only adds.
    while not (wanted := {c.id for cell in to_confirm() for c in confirm_inputs(params, cell)}) <= needed:
        needed |= wanted
    confirms = [
        cell.id + CONFIRM_ID_SUFFIX
        for cell in to_confirm()
        if cell.id not in confirmed
        and all(c.id in validation for c in confirm_inputs(params, cell))
        and decide(params, cell, lambda c: validation[c.id])[0]
    ]

    ranked = list(dict.fromkeys([*(i for i in order if i.removesuffix(CONFIRM_ID_SUFFIX) in by_id), *by_id]))
    position = {cell_id: i for i, cell_id in enumerate(ranked)}

    def ordered(ids: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(ids, key=lambda i: position.get(i, position[i.removesuffix(CONFIRM_ID_SUFFIX)])))

    skipped = set(by_id) - needed - undecided
    return Plan(
        ready=ordered([*(needed - set(validation)), *confirms]),
        waiting=ordered(undecided - needed - set(validation)),
        skipped=ordered(skipped - set(validation)),
    )


def read_cells(cells_dir: Path) -> tuple[dict[str, float], set[str], dict[str, float]]:
    """(best validation accuracy by cell id, ids with a confirm file, best validation accuracy of
    each 2x rerun by cell id) from a study's metrics files."""
    # Imported here: the report imports this module for its skipped cells.
    from align_mamba.report.experiments import load_runs

    if not any(Path(cells_dir).rglob("*.json")):
        return {}, set(), {}  # a study that has not started
    return what_ran(load_runs(cells_dir))


def what_ran(runs) -> tuple[dict[str, float], set[str], dict[str, float]]:
    """read_cells' triple from loaded runs (report.experiments.Run): what `plan` reads."""
    validation = {run.metrics.cell.id: run.metrics.val_accuracy for run in runs}
    confirmed = {run.metrics.cell.id for run in runs if run.confirm is not None}
    return validation, confirmed, {run.metrics.cell.id: run.rerun.val_accuracy for run in runs if run.rerun is not None}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.recall.schedule", description=__doc__.split("\n")[0])
    parser.add_argument("--params", required=True, help="the study's params file")
    parser.add_argument("--cells", required=True, type=Path, help="folder of the metrics files run so far")
    parser.add_argument("--order", type=Path, help="cell ids, one per line, in the order to run them")
    parser.add_argument("--out", type=Path, help="write the ids to run, ready then waiting (default: stdout)")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    params = load_recall_params(args.params)
    if not args.cells.is_dir():
        raise ConfigError(f"--cells: no folder {args.cells}")
    if args.order and not args.order.is_file():
        raise ConfigError(f"--order: no file {args.order}")
    order = args.order.read_text().split() if args.order else []
    validation, confirmed, reruns = read_cells(args.cells)
    result = plan(params, validation, confirmed, order, reruns)
    listing = "".join(f"{i}\n" for i in result.ready + result.waiting)
    if args.out:
        atomic_write_text(args.out, listing)
    else:
        print(listing, end="")
    log.info(
        "%d ready, %d waiting on a lead seed's sweep, %d skipped (their seed learned)",
        len(result.ready),
        len(result.waiting),
        len(result.skipped),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
