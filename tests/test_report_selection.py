"""The learning rate chosen on validation: families of grid entries, the choice, and its section."""

from __future__ import annotations

import json
import math

import pytest
from test_report import metrics_json, write_cell

from align_mamba.report import load_grid, write_report
from align_mamba.report.selection import family_labels, select_on_validation, selection_display


def lr_cell(root, arch, lr, num_pairs, seed, test, val):
    """A pure Mamba-2 cell of entry `arch` trained at `lr`, with its test and validation accuracy."""
    metrics = metrics_json("mamba2", num_pairs, 16, seed, test)
    metrics.update(cell=f"{arch}-np{num_pairs}-ds16-s{seed}", architecture=arch)
    metrics["train"].update(best_val_accuracy=val, lr=lr)
    write_cell(root, metrics)


@pytest.fixture
def sweep(tmp_path):
    """Two learning rates of one model and a hybrid. At num_pairs 16, seed 0, the rate that is better on
    validation is worse on test: the choice must follow validation."""
    root = tmp_path / "cells"
    # (arch, lr, num_pairs, seed, test, val)
    for args in (("mamba2", 1e-3, 16, 0, 0.90, 0.50), ("mamba2-lr1e-2", 1e-2, 16, 0, 0.60, 0.70),
                 ("mamba2", 1e-3, 16, 1, 0.20, 0.30), ("mamba2-lr1e-2", 1e-2, 16, 1, 0.80, 0.85),
                 ("mamba2", 1e-3, 64, 0, 0.10, 0.40), ("mamba2-lr1e-2", 1e-2, 64, 0, 0.30, 0.40)):
        lr_cell(root, *args)
    write_cell(root, metrics_json("hybrid-0_2", 16, 16, 0, 0.99))
    return root


def test_entries_of_one_model_form_a_family_and_others_do_not(sweep):
    labels = family_labels(load_grid(sweep).cells)
    assert list(labels.values()) == ["mamba2 (best of 2 on validation)"]


def test_the_choice_follows_validation_never_test(sweep):
    chosen = select_on_validation(load_grid(sweep).cells).set_index(["num_pairs", "seed"])
    assert chosen.loc[(16, 0), "architecture"] == "mamba2-lr1e-2"  # val 0.70 > 0.50, though test 0.60 < 0.90
    assert chosen.loc[(16, 0), "accuracy"] == pytest.approx(0.60)
    assert chosen.loc[(16, 1), "architecture"] == "mamba2-lr1e-2"
    assert chosen.loc[(64, 0), "architecture"] == "mamba2"  # a tie goes to the first name
    assert set(chosen["compared"]) == {2} and "hybrid-0_2" not in set(chosen["architecture"])


def test_the_table_averages_the_chosen_seeds_and_names_the_winners(sweep):
    table = selection_display(select_on_validation(load_grid(sweep).cells)).set_index("num_pairs")
    assert table.loc[16, "test accuracy (mean ± 95% CI)"].startswith("0.700 ± ")  # (0.60 + 0.80) / 2
    assert table.loc[16, "chosen (seeds)"] == "mamba2-lr1e-2 (lr 0.01) ×2"
    assert table.loc[64, "test accuracy (mean ± 95% CI)"] == "0.100 (n=1)"


def test_the_report_has_the_section_only_when_a_family_exists(sweep, tmp_path):
    metrics = write_report(sweep, tmp_path / "with", threshold=0.5)
    assert metrics["capacity.mamba2-best-lr.ds16"] == 16  # chosen means: 0.70 at np16, 0.10 at np64
    text = (tmp_path / "with" / "report.md").read_text()
    assert "## Learning rate chosen on validation" in text and "mamba2 (best of 2 on validation)" in text
    lone = tmp_path / "lone"
    write_cell(lone, metrics_json("hybrid-0_2", 16, 16, 0, 0.99))
    write_report(lone, tmp_path / "without")
    assert "Learning rate chosen" not in (tmp_path / "without" / "report.md").read_text()


def test_metrics_without_a_learning_rate_read_as_missing(sweep):
    path = next(sweep.rglob("mamba2-np64-ds16-s0/metrics.json"))
    metrics = json.loads(path.read_text())
    del metrics["train"]["lr"]
    path.write_text(json.dumps(metrics))
    cells = load_grid(sweep).cells.set_index("cell")
    assert math.isnan(cells.loc["mamba2-np64-ds16-s0", "lr"]) and cells.loc["mamba2-lr1e-2-np64-ds16-s0", "lr"] == 0.01
