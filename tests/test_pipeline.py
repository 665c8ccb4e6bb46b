"""params.yaml validation, the two orchestrators' agreement, and dry runs of both presets."""

from __future__ import annotations

import copy
import io

import pytest
import yaml
from pipeline_helpers import ROOT, dvc_dag, project_copy, run, snakemake_dag

from align_mamba.core.errors import ConfigError
from align_mamba.pipeline import cells, check_params, cli_flags, load_params, train_command

PRESETS = {"default": ROOT / "params.yaml", "paper": ROOT / "workflow" / "presets" / "paper.yaml",
           "gpu_grid": ROOT / "workflow" / "presets" / "gpu_grid.yaml"}


def default_params() -> dict:
    return yaml.safe_load(PRESETS["default"].read_text())


@pytest.mark.parametrize("preset", PRESETS)
def test_pyyaml_and_ruamel_read_the_same_values(preset):
    # imported here so that `pytest -m gpu` collects on a GPU machine without DVC (and its ruamel)
    ruamel_yaml = pytest.importorskip("ruamel.yaml")
    text = PRESETS[preset].read_text()
    assert yaml.safe_load(text) == ruamel_yaml.YAML(typ="safe", pure=True).load(io.StringIO(text))


def _set(params: dict, dotted: str, value) -> dict:
    params = copy.deepcopy(params)
    *path, last = dotted.split(".")
    target = params
    for key in path:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[last] = value
    return params


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("grid.architectures.0.variant", "mamba9", "grid.architectures.0.variant: 'mamba9' is not one of"),
        ("grid.architectures.2.hybrid_positions", [0, 4], "hybrid_positions [4] outside [0, n_layers=4)"),
        ("grid.num_pairs", [4, 5000], "grid.num_pairs.1: 5000 is greater than the maximum of 4086"),
        ("grid.d_state", [0, 16], "grid.d_state.0: 0 is less than the minimum of 1"),
        ("train.lr", "1e-3", "train.lr: '1e-3' is not of type 'number'"),
        ("grid.architectures.0.lr", "1e-2", "grid.architectures.0.lr: '1e-2' is not of type 'number'"),
        ("grid.architectures.0.lr", 0, "grid.architectures.0.lr: 0 is less than or equal to the minimum of 0"),
        ("grid.num_pairs", [], "grid.num_pairs: [] should be non-empty"),
        ("grid.seeds", [], "grid.seeds: [] should be non-empty"),
        ("data.num_queries", 6, "grid.num_pairs 4 with data settings: num_queries must be <= num_pairs=4 or 'all', got 6"),
        ("model.headdim", 24, "must be divisible by headdim (24)"),
        ("grid.seeds", [0.0], "grid.seeds: 0.0 must be written as an integer"),
    ],
)
def test_bad_params_fail_with_one_line_naming_the_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        check_params(_set(default_params(), key, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_yaml_syntax_error_is_one_line(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("grid: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as err:
        load_params(broken)
    assert "\n" not in str(err.value)


def test_an_architecture_lr_overrides_train_lr_in_its_cells_only():
    params = _set(default_params(), "grid.architectures.0.lr", 1.0e-2)
    check_params(params)
    commands = {cell.name: train_command(params, cell) for cell in cells(params)}
    lrs = {name: [float(v) for k, v in zip(c.split(), c.split()[1:]) if k == "--lr"] for name, c in commands.items()}
    assert lrs["mamba2"] == [3.0e-3, 1.0e-2]  # train.lr, then the entry's: the last flag wins
    assert lrs["hybrid-0"] == lrs["hybrid-0_2"] == [3.0e-3]


def test_cli_flags_render_like_dvc_dict_unpacking():
    assert cli_flags({"name": "h", "hybrid_positions": [0, 2], "lr": 1.0e-3, "empty": []}) == \
        "--name h --hybrid_positions 0 2 --lr 0.001"


def test_snakemake_rejects_bad_params_before_any_job(tmp_path):
    project = project_copy(tmp_path / "project")
    (project / "params.yaml").write_text(
        PRESETS["default"].read_text().replace("d_state: [8, 16]", "d_state: [8, -16]"))
    result = run(["snakemake", "-n"], project, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml: grid.d_state.1: -16 is less than the minimum of 1"]
    assert not (project / "data").exists()


# MQAR data + train + evaluate per cell, secret data + baselines + (train, evaluate) per tagger,
# bench + scan throughput, report + all
@pytest.mark.parametrize(("preset", "jobs"), [("default", 2 + 12 + 12 + 2 + 3 * 2 + 2 + 2),
                                              ("paper", 5 + 375 + 375 + 2 + 3 * 2 + 2 + 2)])
def test_snakemake_dry_run(tmp_path, preset, jobs):
    project = project_copy(tmp_path / "project", params=PRESETS[preset])
    result = run(["snakemake", "-n", "--quiet", "rules"], project)
    counts = dict(line.split() for line in result.stdout.splitlines()[2:] if len(line.split()) == 2)
    assert int(counts["total"]) == jobs, result.stdout


@pytest.mark.parametrize("preset", PRESETS)
def test_snakemake_and_dvc_build_the_same_dag(tmp_path, preset):
    project = project_copy(tmp_path / "project", params=PRESETS[preset], dvc=True)
    snakemake, dvc = snakemake_dag(project), dvc_dag(project)
    assert set(snakemake) == set(dvc)
    mismatched = {out: (snakemake[out], dvc[out]) for out in snakemake if snakemake[out] != dvc[out]}
    assert not mismatched
