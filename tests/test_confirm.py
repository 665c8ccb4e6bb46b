"""Which failed cells the `confirm` stage reruns at twice the budget, decided from validation alone."""

import json
from pathlib import Path

import pytest
import yaml

from align_mamba.recall.confirm import decide, inputs, row
from align_mamba.recall.params import load_recall_params

TINY = Path(__file__).resolve().parents[1] / "workflow" / "presets" / "tiny.yaml"


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """mamba2 at num_pairs 2, 8, 16 x rates 1e-3, 3e-3, 1e-2, one d_state and seed, confirm edge."""
    return grid_params(tmp_path, monkeypatch, "edge")


@pytest.fixture
def selected(tmp_path, monkeypatch):
    """The same grid with confirm selected."""
    return grid_params(tmp_path, monkeypatch, "selected")


def grid_params(tmp_path, monkeypatch, *modes):
    """One experiment per confirm mode, all on the same grid (so every cell is in each)."""
    raw = yaml.safe_load(TINY.read_text())
    experiment = {
        "question": "q",
        "architectures": ["mamba2"],
        "num_pairs": [2, 8, 16],
        "d_state": [4],
        "seeds": [0],
        "lrs": [1.0e-3, 3.0e-3, 1.0e-2],
    }
    raw["experiments"] = {f"cliff_{mode}": {**experiment, "confirm": mode} for mode in modes}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    return load_recall_params(path)


def cell(params, num_pairs, lr):
    return next(c for c in params.cells if c.num_pairs == num_pairs and c.train.lr == lr)


def trained(params, accuracies):
    """Write each cell's train.json with its best validation accuracy: {(num_pairs, lr): accuracy}."""
    for (num_pairs, lr), accuracy in accuracies.items():
        run = Path(cell(params, num_pairs, lr).run_dir)
        run.mkdir(parents=True, exist_ok=True)
        (run / "train.json").write_text(json.dumps({"best_val_accuracy": accuracy}))


def test_row_is_the_adjacent_grid_points(grid):
    def around(num_pairs, lr):
        return sorted((c.num_pairs, c.train.lr) for c in row(grid, cell(grid, num_pairs, lr)))

    assert around(2, 1.0e-3) == [(2, 3.0e-3), (8, 1.0e-3)]
    assert around(8, 3.0e-3) == [(2, 3.0e-3), (8, 1.0e-3), (8, 1.0e-2), (16, 3.0e-3)]
    assert around(16, 1.0e-2) == [(8, 1.0e-2), (16, 3.0e-3)]


def test_a_failure_next_to_a_success_reruns_one_beyond_it_does_not(grid):
    # At every rate: 2 pairs learned, 8 and 16 failed
    trained(grid, {(n, lr): (0.99 if n == 2 else 0.2) for n in (2, 8, 16) for lr in (1.0e-3, 3.0e-3, 1.0e-2)})
    rerun, why = decide(grid, cell(grid, 8, 3.0e-3))
    assert rerun and "mamba2/np2-" in why
    rerun, why = decide(grid, cell(grid, 16, 3.0e-3))
    assert not rerun and "no adjacent cell succeeded" in why
    assert decide(grid, cell(grid, 2, 3.0e-3)) == (False, "validation accuracy 0.9900 reached the threshold 0.9")


def test_a_rate_window_edge_reruns(grid):
    # 16 pairs learned only at 3e-3: its failing neighbours in rate are at an edge
    accuracies = {(n, lr): 0.2 for n in (2, 8, 16) for lr in (1.0e-3, 3.0e-3, 1.0e-2)}
    accuracies[(16, 3.0e-3)] = 0.95
    trained(grid, accuracies)
    assert decide(grid, cell(grid, 16, 1.0e-2))[0]
    assert decide(grid, cell(grid, 8, 3.0e-3))[0]
    assert not decide(grid, cell(grid, 8, 1.0e-2))[0]  # diagonal to the success: not adjacent


def test_selected_reruns_only_the_rate_its_seed_keeps_when_no_rate_learned(selected):
    accuracies = {(n, lr): 0.2 for n in (2, 8, 16) for lr in (1.0e-3, 3.0e-3, 1.0e-2)}
    accuracies[(2, 3.0e-3)] = 0.99  # 2 pairs learned at one rate: its failed rates are not the ones kept
    accuracies[(8, 1.0e-2)] = 0.5  # 8 pairs learned at none: the best on validation stands for the seed
    accuracies[(16, 1.0e-3)] = accuracies[(16, 1.0e-2)] = 0.3  # a tie goes to the smaller rate
    trained(selected, accuracies)
    rerun, why = decide(selected, cell(selected, 2, 1.0e-3))
    assert not rerun and "kept for its seed is 0.003 (0.9900)" in why
    assert [decide(selected, cell(selected, 8, lr))[0] for lr in (1.0e-3, 3.0e-3, 1.0e-2)] == [False, False, True]
    assert [decide(selected, cell(selected, 16, lr))[0] for lr in (1.0e-3, 3.0e-3, 1.0e-2)] == [True, False, False]


def test_a_cell_reruns_when_any_of_its_experiments_asks(tmp_path, monkeypatch):
    both = grid_params(tmp_path, monkeypatch, "selected", "edge")
    accuracies = {(n, lr): 0.2 for n in (2, 8, 16) for lr in (1.0e-3, 3.0e-3, 1.0e-2)}
    accuracies[(2, 3.0e-3)] = 0.99
    trained(both, accuracies)
    # selected alone would not rerun 8 pairs at 3e-3 (1e-3 ties and is kept); edge does (2 pairs learned)
    target = cell(both, 8, 3.0e-3)
    rerun, why = decide(both, target)
    assert rerun and "mamba2/np2-" in why
    # its inputs: the rate sweep at 8 pairs and the adjacent num_pairs at 3e-3
    expected = {c.id for c in both.cells if c.num_pairs == 8 or c.train.lr == 3.0e-3} - {target.id}
    assert {c.id for c in inputs(both, target)} == expected


def test_deciding_that_no_rerun_is_needed_never_imports_torch():
    """Most confirm jobs only read train.json files: each would otherwise pay torch's 2 s import."""
    import subprocess
    import sys

    probe = "import sys, align_mamba.recall.confirm, align_mamba.mixers.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
