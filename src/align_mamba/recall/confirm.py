"""A failure must survive twice the budget: `python -m align_mamba.recall.confirm --params P --cell ID`.

A cell that ends below the capacity threshold on VALIDATION might only have been short of steps (a
cosine schedule can decay the rate before recall starts). Which failed cells this stage trains again,
from scratch with twice the steps, is the experiment's `confirm`:
- `selected`: the rate the report keeps for the cell's seed (the best of its rate sweep on validation),
  when no rate of that sweep reached the threshold: the failures the report states, and no other;
- `edge`: a failure next to a success (the same architecture, d_state and seed at the adjacent
  num_pairs or the adjacent rate of the grid: the cell sits at a cliff's or a rate window's edge);
- `all`: every failed cell.
A cell in several experiments reruns when any of their modes says so. Otherwise the stage records why
no rerun was needed. Either way it writes results/cells/ARCH/STEM.confirm.json: {"needed": false,
"reason": ...} or {"needed": true, ...the rerun's metrics}. Only validation accuracy decides; the test
split is read by the rerun's evaluate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

from align_mamba.core.atomic import atomic_write_json
from align_mamba.core.cli import OneLineParser, setup_logging
from align_mamba.core.errors import DataIntegrityError, run_cli
from align_mamba.recall.config import CellConfig
from align_mamba.recall.params import (
    Cell,
    RecallParams,
    add_cell_arguments,
    cell_from_args,
    cell_record,
    load_recall_params,
)

log = logging.getLogger("align_mamba.recall.confirm")
BUDGET_FACTOR = 2


def row(params: RecallParams, cell: Cell) -> list[Cell]:
    """The cells next to `cell` in its grid: the same architecture, settings and seed at the adjacent
    num_pairs (same rate: a cliff's edge) or at the adjacent rate (same num_pairs: a learning-rate
    window's edge). Adjacent, not any: a failure two grid points past the last success sits beyond
    the cliff, and its rerun would only say so again at twice the cost."""
    kin = _kin(params, cell)
    pairs = sorted({c.num_pairs for c in kin if c.train.lr == cell.train.lr})
    rates = sorted({c.train.lr for c in kin if c.num_pairs == cell.num_pairs})
    near_pairs = set(_adjacent(pairs, cell.num_pairs))
    near_rates = set(_adjacent(rates, cell.train.lr))
    return [
        c
        for c in kin
        if (c.train.lr == cell.train.lr and c.num_pairs in near_pairs)
        or (c.num_pairs == cell.num_pairs and c.train.lr in near_rates)
    ]


def _kin(params: RecallParams, cell: Cell) -> list[Cell]:
    """The cells of `cell`'s architecture, settings, d_state and seed (any num_pairs, any rate)."""

    def key(c: Cell) -> tuple:
        return (c.architecture, c.suffix, c.model.d_state, c.train.seed)

    return [c for c in params.cells if key(c) == key(cell)]


def _adjacent(values: list, value) -> list:
    """The values either side of `value` in the sorted list `values` (which holds it)."""
    i = values.index(value)
    return values[max(i - 1, 0) : i] + values[i + 1 : i + 2]


def best_validation(cell: Cell) -> float:
    path = Path(cell.run_dir) / "train.json"
    try:
        return float(json.loads(path.read_text())["best_val_accuracy"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataIntegrityError(f"{path}: no best_val_accuracy ({type(err).__name__}); train the cell first") from None


def sweep(params: RecallParams, cell: Cell) -> list[Cell]:
    """The cells that differ from `cell` in learning rate alone (its seed's rate sweep, itself included)."""
    return [c for c in _kin(params, cell) if c.num_pairs == cell.num_pairs]


def inputs(params: RecallParams, cell: Cell) -> list[Cell]:
    """The cells whose validation accuracy `decide` reads besides the cell's own."""
    modes = cell.confirm_modes(params)
    others = (row(params, cell) if "edge" in modes else []) + (sweep(params, cell) if "selected" in modes else [])
    return list({c.id: c for c in others if c.id != cell.id}.values())


def chosen(cells: list[Cell], validation: Callable[[Cell], float] = best_validation) -> Cell:
    """The cell selection on validation keeps (report.stats.select_on_validation: ties to the smaller rate)."""
    return max(cells, key=lambda c: (validation(c), -c.train.lr))


def decide(params: RecallParams, cell: Cell, validation: Callable[[Cell], float] = best_validation) -> tuple[bool, str]:
    """(rerun?, why), from validation accuracies only (`validation`: a cell's best; default: its train.json)."""
    threshold = params.report.capacity_threshold
    own = validation(cell)
    if own >= threshold:
        return False, f"validation accuracy {own:.4f} reached the threshold {threshold}"
    modes = cell.confirm_modes(params)
    if "all" in modes:
        return True, f"validation accuracy {own:.4f} below {threshold}: rerun at {BUDGET_FACTOR}x the steps"
    why_not = []
    if "selected" in modes:
        rates = sweep(params, cell)
        best = chosen(rates, validation)
        if best.id == cell.id:
            return True, (
                f"validation accuracy {own:.4f} below {threshold} at the rate kept for its seed (best of "
                f"{len(rates)} on validation): rerun at {BUDGET_FACTOR}x the steps"
            )
        why_not.append(f"the rate kept for its seed is {best.train.lr:g} ({validation(best):.4f})")
    if "edge" in modes:
        successes = [c.id for c in row(params, cell) if validation(c) >= threshold]
        if successes:
            return True, (
                f"validation accuracy {own:.4f} below {threshold} while {', '.join(successes)} succeeded: "
                f"rerun at {BUDGET_FACTOR}x the steps"
            )
        why_not.append("no adjacent cell succeeded (not at an edge)")
    return False, f"validation accuracy {own:.4f}; " + "; ".join(why_not)


def confirm_cell(params: RecallParams, cell: Cell) -> dict:
    needed, reason = decide(params, cell)
    log.info("%s: %s", cell.id, reason)
    if not needed:
        return {"needed": False, "reason": reason, "cell": cell_record(cell)}
    # Imported here: most cells need no rerun, and their decision should not pay for torch's start-up
    from align_mamba.recall.evaluate import evaluate_cell
    from align_mamba.recall.train import train_cell

    longer = dataclasses.replace(cell.train, steps=cell.train.steps * BUDGET_FACTOR)
    out = Path(cell.run_dir) / "confirm"
    train_cell(CellConfig(model=cell.model, train=longer), Path(cell.data_dir), out)
    metrics = evaluate_cell(
        out / "model.pt", [Path(cell.data_dir)], params.run.backend, params.run.device, params.evaluate.batch_size
    )
    # The model as trained: its vocabulary follows the data (see recall.train.RecallTask).
    model = dataclasses.replace(cell.model, vocab_size=metrics["cell"]["model"]["vocab_size"])
    record = cell_record(dataclasses.replace(cell, model=model, train=longer))
    return {"needed": True, "reason": reason, "budget_factor": BUDGET_FACTOR, **metrics, "cell": record}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m align_mamba.recall.confirm", description=__doc__.split("\n")[0])
    add_cell_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log)
    cell = cell_from_args(args)
    if cell is None:
        parser.error("--params and --cell are required")
    atomic_write_json(Path(cell.confirm_metrics), confirm_cell(load_recall_params(args.params), cell))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
