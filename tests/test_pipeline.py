"""The params tree's validation, experiments resolved into cells, and the two orchestrators' agreement."""

from __future__ import annotations

import copy
import io

import pytest
import yaml
from pipeline_helpers import ROOT, dvc_dag, project_copy, run, snakemake_dag

from align_mamba.core.errors import ConfigError
from align_mamba.params import build_params, load_params
from align_mamba.pipeline import dvc_yaml, stages

PRESETS = {path.stem: path for path in [ROOT / "params.yaml", *sorted((ROOT / "workflow" / "presets").glob("*.yaml"))]}


def default_params() -> dict:
    """The tiny preset: a fixture that changes only with the tests (params.yaml is for people)."""
    return yaml.safe_load(PRESETS["tiny"].read_text())


def _set(params: dict, dotted: str, value) -> dict:
    params = copy.deepcopy(params)
    *path, last = dotted.split(".")
    target = params
    for key in path:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[last] = value
    return params


def _experiment(params: dict) -> str:
    return next(iter(params["experiments"]))


@pytest.mark.parametrize("preset", PRESETS)
def test_pyyaml_and_ruamel_read_the_same_values(preset):
    # imported here so that `pytest -m gpu` collects on a GPU machine without DVC (and its ruamel)
    ruamel_yaml = pytest.importorskip("ruamel.yaml")
    text = PRESETS[preset].read_text()
    assert yaml.safe_load(text) == ruamel_yaml.YAML(typ="safe", pure=True).load(io.StringIO(text))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_valid_and_its_dvc_yaml_is_what_it_generates(preset):
    params = load_params(PRESETS[preset])
    assert params.recall.cells
    if preset == "params":
        assert (ROOT / "dvc.yaml").read_text() == dvc_yaml(params), "run `python -m align_mamba.pipeline dvc`"


BAD = [
    ("architectures.0.variant", "mamba9", "variant must be one of"),
    ("train.steps", "100", "train.steps must be int, got '100'"),
    ("train.lr", 1.0e-3, "train.lr belongs to experiments (lrs, seeds) or run"),
    ("model.d_state", 16, "model.d_state belongs to architectures or experiments"),
    ("EXP.lrs", ["1e-3"], "lrs: '1e-3' is not a number (write floats as 1.0e-3"),
    ("EXP.lrs", [float("inf")], "lrs: inf must be a finite rate > 0"),
    ("EXP.lrs", [0.0], "lrs: 0.0 must be a finite rate > 0"),
    ("EXP.lrs", [], "lrs must be a non-empty list of learning rates"),
    ("EXP.seeds", [12345678901234567890], "seeds: 12345678901234567890 is outside [0, 2147483647]"),
    ("EXP.seeds", [0.0], "seeds: 0.0 must be written as an integer"),
    ("EXP.d_state", [0], "d_state: 0 is outside [1, inf]"),
    ("EXP.num_pairs", [4, 5000], "num_pairs 5000 with the data settings"),
    ("EXP.architectures", ["nope"], "unknown architecture 'nope'"),
    ("EXP.model", {"n_layers": 0}, "n_layers must be > 0"),
    ("EXP.model", {"d_state": 4}, "d_state is an axis of the grid, not an override"),
    ("EXP.train", {"stepz": 4}, "unknown key(s) in experiments"),
    ("EXP.confirm", "yes", "confirm must be one of none, selected, edge, all"),
    ("EXP.extra_seeds", {"nope": [3]}, "extra_seeds: 'nope' is not in the experiment's architectures"),
    ("EXP.extra_seeds", {"mamba2": [0]}, "extra_seeds.mamba2: seed(s) [0] are already in the experiment's seeds"),
    ("EXP.extra_seeds", [3, 4], "extra_seeds must map architectures to lists of seeds"),
    ("data.num_queries", 6, "num_queries must be <= num_pairs=4 or 'all', got 6"),
    ("model.headdim", 24, "must be divisible by headdim (24)"),
    ("run.device", "tpu", "device must be one of auto, cpu, cuda"),
    ("secrets.scan_tagger", "nope", "secrets.scan_tagger: 'nope' is not one of"),
    ("secrets.data.hard_fraction", 1.5, "secrets.data: hard_fraction must be a number in [0, 1], got 1.5"),
    ("secrets.data.hard_fraction", "0.25", "secrets.data.hard_fraction must be a finite number, got '0.25'"),
    ("bench.lengths", [64, "x"], "bench.lengths must be a list of integers"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_params_fail_with_one_line_naming_the_key(key, value, message):
    params = default_params()
    key = key.replace("EXP", f"experiments.{_experiment(params)}")
    with pytest.raises(ConfigError) as err:
        build_params(_set(params, key, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_key_written_twice_and_a_yaml_syntax_error_are_one_line(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text(PRESETS["params"].read_text().replace("run:\n", "run:\n  device: cpu\n", 1))
    with pytest.raises(ConfigError, match="key 'device' is written twice") as err:
        load_params(twice)
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("run: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as err:
        load_params(broken)
    assert "\n" not in str(err.value)


def _two_experiments(share: bool) -> dict:
    params = default_params()
    base = params["experiments"][_experiment(params)]
    first = {
        **base,
        "architectures": ["mamba2"],
        "num_pairs": [4, 8],
        "d_state": [8],
        "seeds": [0],
        "lrs": [3.0e-3],
        "expect": [],
    }
    second = {**first, "num_pairs": [8] if share else [4], "model": {"n_layers": 2} if not share else None}
    second = {k: v for k, v in second.items() if v is not None}
    params["experiments"] = {"first": first, "second": second}
    return params


def test_a_cell_two_experiments_share_is_one_cell_naming_both():
    params = build_params(_two_experiments(share=True)).recall
    ids = [cell.id for cell in params.cells]
    assert ids == ["mamba2/np4-ds8-lr0.003-s0", "mamba2/np8-ds8-lr0.003-s0"]
    assert params.cell("mamba2/np8-ds8-lr0.003-s0").experiments == ("first", "second")
    assert params.cell("mamba2/np4-ds8-lr0.003-s0").experiments == ("first",)


def test_an_experiments_override_makes_its_own_cells():
    params = build_params(_two_experiments(share=False)).recall
    overridden = [cell for cell in params.cells if cell.experiments == ("second",)]
    assert len(params.cells) == 3 and len(overridden) == 1
    assert overridden[0].model.n_layers == 2 and overridden[0].suffix.startswith("-x")
    assert overridden[0].id.startswith("mamba2/np4-ds8-lr0.003-s0-x")


def test_an_architectures_lrs_replace_the_experiments():
    params = default_params()
    params["architectures"][0]["lrs"] = [1.0e-2, 3.0e-2]
    resolved = build_params(params).recall
    rates = {(cell.architecture, cell.train.lr) for cell in resolved.cells}
    experiment_lrs = set(params["experiments"][_experiment(params)]["lrs"])
    assert {lr for arch, lr in rates if arch == "mamba2"} == {1.0e-2, 3.0e-2}
    assert {lr for arch, lr in rates if arch != "mamba2"} == experiment_lrs


def test_extra_seeds_add_cells_for_their_architecture_only():
    params = default_params()
    experiment = params["experiments"][_experiment(params)]
    experiment["extra_seeds"] = {"mamba2": [7]}
    resolved = build_params(params).recall
    seeds = {(cell.architecture, cell.train.seed) for cell in resolved.cells}
    assert {s for arch, s in seeds if arch == "mamba2"} == {*experiment["seeds"], 7}
    assert {s for arch, s in seeds if arch != "mamba2"} == set(experiment["seeds"])
    # every num_pairs, d_state and rate of the row gets the extra seed
    base = build_params(default_params()).recall
    added = len(resolved.cells) - len(base.cells)
    rates = {c.train.lr for c in base.cells if c.architecture == "mamba2"}
    assert added == len(experiment["num_pairs"]) * len(experiment["d_state"]) * len(rates)


def test_commands_carry_ids_not_settings():
    for stage in stages(load_params(PRESETS["params"])):
        assert "--lr" not in stage.cmd and "--d_state" not in stage.cmd and "--d-state" not in stage.cmd
        if stage.rule in ("train", "evaluate", "confirm"):
            assert f"--cell {stage.key}" in stage.cmd


def test_recall_stages_do_not_depend_on_the_secrets_code():
    for stage in stages(load_params(PRESETS["params"])):
        if stage.rule in ("mqar_data", "train", "evaluate", "confirm"):
            assert not [dep for dep in stage.deps if "secrets" in dep], stage.name
        if stage.rule.startswith("secrets"):
            assert not [dep for dep in stage.deps if "/recall" in dep], stage.name


def test_check_prints_the_cells_per_experiment(capsys):
    from align_mamba.pipeline import main

    assert main(["check", str(PRESETS["params"])]) == 0
    out = capsys.readouterr().out
    params = load_params(PRESETS["params"]).recall
    assert f"valid, {len(params.cells)} cells" in out
    for experiment in params.experiments:
        assert f"  {experiment.name}: " in out
    assert "  union: " in out


def test_snakemake_rejects_bad_params_before_any_job(tmp_path):
    project = project_copy(tmp_path / "project")
    params = default_params()
    bad = _set(params, f"experiments.{_experiment(params)}.d_state", [8, -16])
    (project / "params.yaml").write_text(yaml.safe_dump(bad))
    result = run(["snakemake", "-n"], project, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "d_state: -16 is outside" in errors[0]
    assert not (project / "data").exists()


@pytest.mark.slow
def test_dvc_repro_stops_at_validate_and_writes_nothing(tmp_path):
    project = project_copy(tmp_path / "project", dvc=True)
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("  steps: ", "  steps: fast #", 1))
    result = run(["dvc", "repro"], project, check=False)
    assert result.returncode != 0
    assert "train.steps must be int" in result.stdout + result.stderr
    assert not (project / "data" / "mqar").exists() and not (project / "data" / "secrets").exists()


def _two_experiments_file(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(_two_experiments(share=True)))
    return path


def test_snakemake_dry_run_counts_every_job(tmp_path):
    params = load_params(PRESETS["params"])
    project = project_copy(tmp_path / "project")
    result = run(["snakemake", "-n", "--quiet", "rules"], project)
    counts = dict(line.split() for line in result.stdout.splitlines()[2:] if len(line.split()) == 2)
    assert int(counts["total"]) == len(stages(params)) + 1  # and `all`


@pytest.mark.parametrize("preset", [*PRESETS, "shared"])
def test_snakemake_and_dvc_build_the_same_dag(tmp_path, preset):
    source = _two_experiments_file(tmp_path) if preset == "shared" else PRESETS[preset]
    project = project_copy(tmp_path / "project", params=source, dvc=True)
    run(["python", "-m", "align_mamba.pipeline", "dvc"], project)
    snakemake, dvc = snakemake_dag(project), dvc_dag(project)
    assert set(snakemake) == set(dvc)
    mismatched = {out: (snakemake[out], dvc[out]) for out in snakemake if snakemake[out] != dvc[out]}
    assert not mismatched
    if preset == "shared":  # the shared cell trains once in both
        trains = [out for out in dvc if out.endswith("/model.pt") and "/secrets/" not in out]
        assert sorted(trains) == ["runs/mamba2/np4-ds8-lr0.003-s0/model.pt", "runs/mamba2/np8-ds8-lr0.003-s0/model.pt"]
