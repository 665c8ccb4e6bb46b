"""Every stage of the pipeline, once: its command, inputs, outputs and params, for both orchestrators.

`stages(params)` lists them. `dvc.yaml` is generated from that list (`python -m align_mamba.pipeline
dvc`), and the Snakemake rules look their jobs up in it, so the two run the same commands on the same
files (tests/test_pipeline.py compares their DAGs). Commands carry no settings, only the params file
and an id (`--cell ARCH/STEM`, `--tagger NAME`): each stage reads its own settings from the params tree.

`python -m align_mamba.pipeline check [PARAMS]` validates a params file and prints its experiments'
cells; `--dvc-yaml FILE` also checks that FILE is what this params file generates (DVC's first stage).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from align_mamba.core.atomic import atomic_write_text
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.params import Params, load_params
from align_mamba.recall.confirm import inputs as confirm_inputs
from align_mamba.recall.params import Cell, data_dir, describe

PARAMS_FILE = "params.yaml"
VALIDATED = "data/params.ok"
BENCH_DIR = "results/bench"
SECRETS_DATA = "data/secrets"
SECRETS_RESULTS = "results/secrets"
PACKAGE = Path(__file__).resolve().parent
SRC = PACKAGE.parent


@dataclass(frozen=True)
class Stage:
    """One job. `rule` names the Snakemake rule (and DVC stage family); `key` tells jobs of a rule apart."""

    rule: str
    key: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[tuple[str, str, str], ...] = ()  # (file, x, y)
    gpu: bool = False

    @property
    def name(self) -> str:
        return self.rule if not self.key else f"{self.rule}-{self.key.replace('/', '-').replace('.', 'p')}"


@cache
def _imports(module: str) -> frozenset[str]:
    """align_mamba modules `module` imports, directly (including imports inside functions)."""
    path = _module_path(module)
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("align_mamba"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("align_mamba"))
    return frozenset(name for name in found if _module_path(name, strict=False) is not None)


def _module_path(module: str, strict: bool = True) -> Path | None:
    base = SRC / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    if strict:
        raise ConfigError(f"no module {module} under {SRC}")
    return None


def code_deps(*modules: str) -> tuple[str, ...]:
    """The package's source files the modules run, found by following their imports (and each
    package's __init__), as paths relative to the project root: a stage reruns when its code changes."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))  # parent packages' __init__
        todo.extend(_imports(module))
    files = {_module_path(m) for m in seen} - {None}
    return tuple(sorted(str(path.relative_to(SRC.parent)) for path in _collapse(files)))


def _collapse(files: set[Path]) -> set[Path]:
    """Name a folder instead of its files when the stage runs every module in it (shorter dvc.yaml)."""
    for folder in sorted({p.parent for p in files}, key=lambda d: -len(d.parts)):
        if folder == PACKAGE:
            continue
        inside = {p for p in files if folder in p.parents}
        if inside and set(folder.rglob("*.py")) <= inside | {f for f in inside if f.is_dir()}:
            files = (files - inside) | {folder}
    return files


def _cell_params(params: Params, cell: Cell) -> tuple[str, ...]:
    keys = ["model", "train", "run", "architectures"]
    for name in cell.experiments:
        experiment = params.recall.experiment(name)
        keys += [f"experiments.{name}.{part}" for part in ("model", "train") if getattr(experiment, part)]
    return tuple(keys)


def _log(*parts: str) -> str:
    return "logs/" + "/".join(parts) + ".log"


def recall_stages(params: Params) -> Iterator[Stage]:
    data_code = code_deps("align_mamba.recall.data")
    for num_pairs in params.recall.num_pairs:
        yield Stage(
            "mqar_data",
            f"np{num_pairs}",
            f"python -m align_mamba.recall.data --params {PARAMS_FILE} --num-pairs {num_pairs} "
            f"--out {data_dir(num_pairs)} --log {_log('mqar_data', f'np{num_pairs}')}",
            deps=(VALIDATED, *data_code),
            outs=(data_dir(num_pairs),),
            params=("data",),
        )
    train_code, evaluate_code = code_deps("align_mamba.recall.train"), code_deps("align_mamba.recall.evaluate")
    for cell in params.recall.cells:
        yield Stage(
            "train",
            cell.id,
            f"python -m align_mamba.recall.train --params {PARAMS_FILE} --cell {cell.id} "
            f"--log {_log('train', cell.id)}",
            deps=(VALIDATED, cell.data_dir, *train_code),
            outs=(f"{cell.run_dir}/model.pt", f"{cell.run_dir}/history.csv", f"{cell.run_dir}/train.json"),
            params=_cell_params(params, cell),
            plots=((f"{cell.run_dir}/history.csv", "step", "loss"),),
            gpu=True,
        )
        yield Stage(
            "evaluate",
            cell.id,
            f"python -m align_mamba.recall.evaluate --params {PARAMS_FILE} --cell {cell.id} "
            f"--log {_log('evaluate', cell.id)}",
            deps=(VALIDATED, f"{cell.run_dir}/model.pt", cell.data_dir, *evaluate_code),
            outs=(cell.metrics,),
            params=("run", "evaluate"),
            gpu=True,
        )
    confirm_code = code_deps("align_mamba.recall.confirm")
    for cell in params.recall.cells:
        if not cell.confirm_modes(params.recall):
            continue
        neighbours = tuple(f"{other.run_dir}/train.json" for other in confirm_inputs(params.recall, cell))
        yield Stage(
            "confirm",
            cell.id,
            f"python -m align_mamba.recall.confirm --params {PARAMS_FILE} --cell {cell.id} "
            f"--log {_log('confirm', cell.id)}",
            deps=(VALIDATED, f"{cell.run_dir}/train.json", *neighbours, cell.data_dir, *confirm_code),
            outs=(cell.confirm_metrics,),
            params=(*_cell_params(params, cell), "report", "evaluate"),
            gpu=True,
        )


def tagger_dir(name: str) -> str:
    return f"runs/secrets/{name}"


def secrets_stages(params: Params) -> Iterator[Stage]:
    secrets = params.secrets
    yield Stage(
        "secrets_data",
        "",
        f"python -m align_mamba.secrets.data --params {PARAMS_FILE} --out {SECRETS_DATA} "
        f"--log {_log('secrets', 'data')}",
        deps=(VALIDATED, *code_deps("align_mamba.secrets.data.__main__")),
        outs=(SECRETS_DATA,),
        params=("secrets.data",),
    )
    train_code, evaluate_code = code_deps("align_mamba.secrets.train"), code_deps("align_mamba.secrets.evaluate")
    for tagger in secrets.taggers:
        run_dir = tagger_dir(tagger.name)
        yield Stage(
            "secrets_train",
            tagger.name,
            f"python -m align_mamba.secrets.train --params {PARAMS_FILE} --tagger {tagger.name} "
            f"--data {SECRETS_DATA} --out {run_dir} --log {_log('secrets', 'train', tagger.name)}",
            deps=(VALIDATED, SECRETS_DATA, *train_code),
            outs=(f"{run_dir}/model.pt", f"{run_dir}/history.csv", f"{run_dir}/train.json"),
            params=("secrets.taggers", "secrets.model", "secrets.train", "secrets.tagger", "run"),
            plots=((f"{run_dir}/history.csv", "step", "loss"),),
            gpu=True,
        )
        yield Stage(
            "secrets_evaluate",
            tagger.name,
            f"python -m align_mamba.secrets.evaluate --params {PARAMS_FILE} --data {SECRETS_DATA} "
            f"--checkpoint {run_dir}/model.pt --out {SECRETS_RESULTS}/{tagger.name} "
            f"--log {_log('secrets', 'evaluate', tagger.name)}",
            deps=(VALIDATED, f"{run_dir}/model.pt", SECRETS_DATA, *evaluate_code),
            outs=(f"{SECRETS_RESULTS}/{tagger.name}",),
            params=("secrets.evaluate", "run"),
            gpu=True,
        )
    yield Stage(
        "secrets_baselines",
        "",
        f"python -m align_mamba.secrets.baselines --params {PARAMS_FILE} --data {SECRETS_DATA} "
        f"--out {SECRETS_RESULTS}/baselines --log {_log('secrets', 'baselines')}",
        deps=(VALIDATED, SECRETS_DATA, *code_deps("align_mamba.secrets.baselines")),
        outs=(f"{SECRETS_RESULTS}/baselines",),
        params=("secrets.evaluate", "secrets.baselines"),
    )


def bench_stages(params: Params) -> Iterator[Stage]:
    yield Stage(
        "bench",
        "",
        f"python -m align_mamba.bench --params {PARAMS_FILE} --out {BENCH_DIR} --log {_log('bench', 'bench')}",
        deps=(VALIDATED, *code_deps("align_mamba.bench.__main__")),
        outs=(f"{BENCH_DIR}/mixers.csv", f"{BENCH_DIR}/train_step.csv", f"{BENCH_DIR}/summary.json"),
        params=("bench",),
        plots=(
            (f"{BENCH_DIR}/mixers.csv", "seq_len", "tokens_per_s"),
            (f"{BENCH_DIR}/train_step.csv", "rung", "tokens_per_s"),
        ),
    )
    checkpoint = f"{tagger_dir(params.secrets.scan_tagger)}/model.pt"
    yield Stage(
        "scan_throughput",
        "",
        f"python -m align_mamba.secrets.throughput --params {PARAMS_FILE} --checkpoint {checkpoint} "
        f"--out {BENCH_DIR}/scan_throughput.csv --log {_log('bench', 'scan_throughput')}",
        deps=(VALIDATED, checkpoint, *code_deps("align_mamba.secrets.throughput")),
        outs=(f"{BENCH_DIR}/scan_throughput.csv",),
        params=("secrets.throughput", "secrets.scan_tagger", "run"),
        plots=((f"{BENCH_DIR}/scan_throughput.csv", "size_mb", "mb_per_s"),),
    )


REPORT_OUTS = ("results/report.md", "results/report.html", "results/cells.csv", "results/figures")
METRICS = "results/metrics.json"


def report_stage(params: Params, before: list[Stage]) -> Stage:
    """The report reads every cell's metrics and the other studies' results: it runs last."""
    wanted = {"evaluate", "confirm", "secrets_evaluate", "secrets_baselines", "bench", "scan_throughput"}
    inputs = tuple(out for stage in before if stage.rule in wanted for out in stage.outs)
    return Stage(
        "report",
        "",
        f"python -m align_mamba.report --params {PARAMS_FILE} --cells results/cells --bench {BENCH_DIR} "
        f"--secrets {SECRETS_RESULTS} --out results --log {_log('report', 'report')}",
        deps=(VALIDATED, *inputs, *code_deps("align_mamba.report.__main__")),
        outs=REPORT_OUTS,
        params=("architectures", "experiments", "report"),
        metrics=(METRICS,),
    )


def stages(params: Params) -> list[Stage]:
    """Every job of the pipeline, in an order that runs (each stage after the stages it reads)."""
    validate = Stage(
        "validate",
        "",
        f"python -m align_mamba.pipeline check {PARAMS_FILE} --dvc-yaml dvc.yaml --out {VALIDATED}",
        deps=(PARAMS_FILE, *code_deps("align_mamba.pipeline")),
        outs=(VALIDATED,),
    )
    jobs = [validate, *recall_stages(params), *secrets_stages(params), *bench_stages(params)]
    return [*jobs, report_stage(params, jobs)]


def dvc_yaml(params: Params) -> str:
    """dvc.yaml for `params`: one explicit stage per job, no templating to keep in step by hand."""
    entries = {}
    for stage in stages(params):
        entry: dict = {"cmd": stage.cmd, "deps": list(stage.deps)}
        if stage.params:
            entry["params"] = list(stage.params)
        # DVC counts a plot as an output: listing it under outs too is an overlap it refuses.
        plotted = {path for path, _, _ in stage.plots}
        entry["outs"] = [out for out in stage.outs if out not in plotted]
        if stage.metrics:
            entry["metrics"] = [{path: {"cache": False}} for path in stage.metrics]
        if stage.plots:
            entry["plots"] = [{path: {"x": x, "y": y}} for path, x, y in stage.plots]
        entries[stage.name] = entry
    header = (
        "# Generated from params.yaml by `python -m align_mamba.pipeline dvc`: do not edit by hand.\n"
        "# `dvc repro` checks it first (stage validate) and says when to regenerate it.\n"
    )
    return header + yaml.safe_dump({"stages": entries}, sort_keys=False, width=1000)


def check(params_path: Path, dvc_yaml_path: Path | None, out: Path | None) -> Params:
    params = load_params(params_path)
    if dvc_yaml_path is not None:
        expected = dvc_yaml(params)
        found = dvc_yaml_path.read_text() if dvc_yaml_path.is_file() else ""
        if found != expected:
            raise ConfigError(
                f"{dvc_yaml_path} does not match {params_path}: regenerate it with "
                f"`python -m align_mamba.pipeline dvc`, then rerun"
            )
    if out is not None:
        # Constant content: a valid edit of params.yaml must not invalidate every later stage.
        atomic_write_text(out, "params.yaml is valid\n")
    return params


USAGE = (
    "usage: python -m align_mamba.pipeline check [PARAMS] [--dvc-yaml FILE] [--out FILE]\n"
    "       python -m align_mamba.pipeline dvc [PARAMS] [--out dvc.yaml]"
)


def _options(args: list[str], names: tuple[str, ...]) -> tuple[list[str], dict[str, Path]]:
    positional, options = [], {}
    while args:
        head = args.pop(0)
        if head in names and args:
            options[head] = Path(args.pop(0))
        elif head.startswith("--"):
            raise ConfigError(f"unknown option {head}; {USAGE.splitlines()[0]}")
        else:
            positional.append(head)
    if len(positional) > 1:
        raise ConfigError(USAGE.splitlines()[0])
    return positional, options


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check", "dvc"):
        raise ConfigError(USAGE.splitlines()[0] + " (or: dvc [PARAMS] [--out dvc.yaml])")
    command = args.pop(0)
    if command == "dvc":
        positional, options = _options(args, ("--out",))
        params = load_params(positional[0] if positional else PARAMS_FILE)
        out = options.get("--out", Path("dvc.yaml"))
        atomic_write_text(out, dvc_yaml(params))
        print(f"{out}: {len(stages(params))} stages from {params.source}")
        return 0
    positional, options = _options(args, ("--dvc-yaml", "--out"))
    path = Path(positional[0] if positional else PARAMS_FILE)
    params = check(path, options.get("--dvc-yaml"), options.get("--out"))
    print(f"{path}: valid, {len(params.recall.cells)} cells in {len(params.recall.experiments)} experiments")
    for line in describe(params.recall):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
