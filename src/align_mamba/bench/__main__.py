"""Benchmark the mixers, the architectures and the training step: `python -m align_mamba.bench --out DIR [flags]`.

Every BenchConfig field is a flag in both spellings (--tokens-per-batch / --tokens_per_batch);
lists take several values (--lengths 64 128 256) or none (--ladder-rungs alone skips the ladder).
--params params.yaml reads its `bench:` section first; flags override it. Writes OUT/mixers.csv,
OUT/train_step.csv and OUT/summary.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

from align_mamba.bench.config import BenchConfig, config_fields, load_bench_config
from align_mamba.bench.run import run_bench
from align_mamba.core.cli import OneLineParser, flag_names, setup_logging
from align_mamba.core.errors import ConfigError, run_cli
from align_mamba.core.params import read_yaml

log = logging.getLogger("align_mamba.bench")


def _params_section(path: Path) -> dict:
    loaded = read_yaml(path, "params file") or {}
    section = loaded.get("bench") if isinstance(loaded, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path} has no `bench:` mapping")
    return section


def parse_config(argv: list[str] | None) -> tuple[BenchConfig, Path, Path | None]:
    parser = OneLineParser(prog="python -m align_mamba.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for mixers.csv, train_step.csv, summary.json")
    parser.add_argument("--params", type=Path, help="a params.yaml whose `bench:` section sets the defaults")
    group = parser.add_argument_group("bench settings")
    defaults = BenchConfig.__dataclass_fields__
    for name, kind, is_list in config_fields():
        group.add_argument(
            *flag_names(name),
            dest=name,
            type=kind,
            nargs="*" if is_list else None,
            default=None,
            help=f"default {defaults[name].default!r}",
        )
    args = parser.parse_args(argv)
    values = _params_section(args.params) if args.params else {}
    values.update({name: getattr(args, name) for name, _, _ in config_fields() if getattr(args, name) is not None})
    return load_bench_config(values), args.out, args.log


def main(argv: list[str] | None = None) -> int:
    cfg, out, log_path = parse_config(argv)
    setup_logging(log_path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    summary = run_bench(cfg, out)
    log.info("bench written to %s: %s rows (%s)", out, sum(summary["rows"].values()), summary["rows"])
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
