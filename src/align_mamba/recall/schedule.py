"""Which of a study's cells to run next when GPU time is scarce: the lead-rate rule.

`python -m align_mamba.recall.schedule --params P --cells DIR --order QUEUE --out QUEUE`

The full grid runs every seed at every rate of its sweep. Most of those runs decide nothing: a
seed that learns at one rate has learned, whatever the other rates do. Per grid point
(architecture, its settings, num_pairs, d_state):
- the *lead seed* (the smallest) runs at every rate; the *lead rate* is the one best on its
  validation accuracy (ties to the smaller rate, as the report's selection);
- every other seed runs at the lead rate first, and at the rest of its sweep only if it failed
  there on validation: a seed counts as failed only after every rate failed, as on the full grid;
- a seed that failed at every rate gets its confirm jobs (2x-budget reruns) that will rerun, by
  the confirm stage's own decision from validation, once everything they read has run; what they
  read (`edge`: the adjacent num_pairs at the same rate) is needed too. A seed that learned needs none.
Cells never needed are *skipped* (their seed learned at the lead rate), never run and never filled
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
from align_mamba.recall.confirm import decide
from align_mamba.recall.confirm import inputs as confirm_inputs
from align_mamba.recall.metrics import CellMetrics, read_json
from align_mamba.recall.params import Cell, RecallParams, load_recall_params

log = logging.getLogger("align_mamba.recall.schedule")
CONFIRM = ".confirm"


@dataclass(frozen=True)
class Plan:
    """Cell ids (and `ID.confirm` job ids) by what the lead-rate rule makes of them, in run order.

    ready: needed and decidable now; waiting: needed unless a lead seed's sweep, still running,
    decides otherwise; skipped: not needed (their seed learned at its point's lead rate).
    """

    ready: tuple[str, ...]
    waiting: tuple[str, ...]
    skipped: tuple[str, ...]


def _point(cell: Cell) -> tuple:
    return (cell.architecture, cell.suffix, cell.num_pairs, cell.model.d_state)


def _best(cells: Iterable[Cell], validation: Mapping[str, float]) -> Cell:
    return max(cells, key=lambda c: (validation[c.id], -c.train.lr))


def plan(
    params: RecallParams,
    validation: Mapping[str, float],
    confirmed: set[str],
    order: Iterable[str] = (),
) -> Plan:
    """The lead-rate rule over `params.cells`.

    validation: best validation accuracy of every cell run so far, by id; confirmed: ids whose
    confirm job has written its file; order: ids in the order to run them (cells it leaves out
    follow in params order).
    """
    threshold = params.report.capacity_threshold
    points: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in params.cells:
        points[_point(cell)].append(cell)

    def failed(cell: Cell) -> bool:
        return cell.id in validation and validation[cell.id] < threshold

    needed: set[str] = set()
    undecided: set[str] = set()
    for cells in points.values():
        lead_seed = min(c.train.seed for c in cells)
        lead = [c for c in cells if c.train.seed == lead_seed]
        lead_rate = _best(lead, validation).train.lr if all(c.id in validation for c in lead) else None
        by_seed = defaultdict(list)
        for cell in cells:
            by_seed[cell.train.seed].append(cell)
        for seed, sweep in by_seed.items():
            at_lead = [c for c in sweep if c.train.lr == lead_rate]
            for cell in sweep:
                if seed == lead_seed or cell.train.lr == lead_rate or any(map(failed, at_lead)):
                    needed.add(cell.id)
                elif lead_rate is None or not all(c.id in validation for c in at_lead):
                    undecided.add(cell.id)

    # A failed seed's confirm jobs read other cells (`edge`: the adjacent num_pairs at the same
    # rate): those are needed too, and so are the cells the confirm jobs of their own failed seeds
    # read (a fixed point; each round only adds). A seed that learned at some rate needs no rerun.
    by_id = {cell.id: cell for cell in params.cells}

    def seed_failed(cell: Cell) -> bool:
        sweep = [c for c in points[_point(cell)] if c.train.seed == cell.train.seed and c.id in needed]
        return all(map(failed, sweep))

    def to_confirm() -> list[Cell]:
        return [
            by_id[i] for i in needed if failed(by_id[i]) and by_id[i].confirm_modes(params) and seed_failed(by_id[i])
        ]

    while True:
        wanted = {other.id for cell in to_confirm() for other in confirm_inputs(params, cell)}
        if wanted <= needed:
            break
        needed |= wanted
    confirms = [
        cell.id
        for cell in to_confirm()
        if cell.id not in confirmed
        and all(c.id in validation for c in confirm_inputs(params, cell))
        and decide(params, cell, lambda c: validation[c.id])[0]
    ]

    ranked = list(dict.fromkeys([*(i for i in order if i.removesuffix(CONFIRM) in by_id), *by_id]))
    position = {cell_id: i for i, cell_id in enumerate(ranked)}

    def ordered(ids: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(ids, key=lambda i: position.get(i, position[i.removesuffix(CONFIRM)])))

    ready = {i for i in needed if i not in validation} | {i + CONFIRM for i in confirms}
    undecided -= needed
    skipped = set(by_id) - needed - undecided
    return Plan(ordered(ready), ordered(undecided - set(validation)), ordered(skipped - set(validation)))


def read_cells(cells_dir: Path) -> tuple[dict[str, float], set[str]]:
    """(best validation accuracy by cell id, ids with a confirm file) from a study's metrics files."""
    validation, confirmed = {}, set()
    for path in sorted(Path(cells_dir).rglob("*.json")):
        if path.name.endswith(CONFIRM + ".json"):
            confirmed.add(path.relative_to(cells_dir).as_posix().removesuffix(CONFIRM + ".json"))
            continue
        metrics = CellMetrics.from_json(read_json(path), str(path))
        validation[metrics.cell.id] = metrics.val_accuracy
    return validation, confirmed


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
    order = args.order.read_text().split() if args.order else []
    result = plan(params, *read_cells(args.cells), order)
    listing = "".join(f"{i}\n" for i in result.ready + result.waiting)
    if args.out:
        atomic_write_text(args.out, listing)
    else:
        print(listing, end="")
    log.info(
        "%d ready, %d waiting on a lead seed's sweep, %d skipped (their seed learned at the lead rate)",
        len(result.ready),
        len(result.waiting),
        len(result.skipped),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
