"""Command-line flags generated from a study's config dataclasses, merged over an optional YAML file.

A study passes its sections, {section name: dataclass}, e.g. recall.train.SECTIONS.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from align_mamba.core.errors import ConfigError
from align_mamba.core.params import from_mapping, read_yaml


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors become ConfigError: one `error: ...` line through run_cli, exit 2.

    Every CLI also takes `--log FILE`: the job's log (both orchestrators pass one per job).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--log", type=Path, help="also write this job's log (and any error) to this file")

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def setup_logging(log_path: Path | None) -> None:
    """INFO lines to stderr and, when given, to `log_path` (created with its directory)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True
    )


def flag_names(field_name: str) -> list[str]:
    """`--d-model` and `--d_model`: the second is how DVC spells a params.yaml key it unpacks."""
    names = [f"--{field_name.replace('_', '-')}", f"--{field_name}"]
    return list(dict.fromkeys(names))


def parse_bool(text: str) -> bool:
    """A flag's true/false (argparse's `type=bool` would take "false" as True)."""
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, sections: dict[str, type]) -> None:
    """One flag per field of every config section; unset flags stay None so the YAML value wins.

    A tuple field (hybrid_positions) takes zero or more integers: `--hybrid-positions 0 2`; a bool
    field true or false: `--cuda-graph true`.
    """
    for section, cls in sections.items():
        group = parser.add_argument_group(f"{section} settings")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            is_list = typing.get_origin(hints[f.name]) is tuple
            group.add_argument(
                *flag_names(f.name),
                dest=f"{section}__{f.name}",
                default=None,
                type=int if is_list else parse_bool if hints[f.name] is bool else hints[f.name],
                nargs="*" if is_list else None,
                help=f"default {f.default!r}",
            )


def _read_sections_yaml(path: Path, sections: dict[str, type]) -> dict:
    names = ", ".join(sections)
    loaded = read_yaml(path, "config file") or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping with sections {names}")
    unknown = sorted(set(loaded) - set(sections))
    if unknown:
        raise ConfigError(f"unknown section(s) in {path}: {', '.join(unknown)} (expected {names})")
    bad = [name for name, section in loaded.items() if section is not None and not isinstance(section, dict)]
    if bad:
        raise ConfigError(f"{path}: section {bad[0]!r} must be a mapping of settings")
    return loaded


def load_sections(args: argparse.Namespace, sections: dict[str, type]) -> dict:
    """{section: dataclass instance} from `--config` (if given) with every passed flag laid over it."""
    values = _read_sections_yaml(args.config, sections) if getattr(args, "config", None) else {}
    loaded = {}
    for section, cls in sections.items():
        merged = dict(values.get(section) or {})
        for f in dataclasses.fields(cls):
            flag = getattr(args, f"{section}__{f.name}")
            if flag is not None:
                merged[f.name] = flag
        loaded[section] = from_mapping(cls, merged, section)
    return loaded


def parse_with_params(
    parser: argparse.ArgumentParser, argv: list[str] | None, settings: Callable[[argparse.Namespace], Mapping[str, Any]]
) -> argparse.Namespace:
    """Parse `argv`; with `--params FILE`, `settings(args)` gives the flags' values from the params tree.

    The tree is validated once when loaded, so its values go straight into the namespace (no flag
    strings in between); a flag given by hand still wins. Without `--params` the flags work alone.
    """
    parser.add_argument("--params", type=Path, help="params.yaml: take this stage's settings from it")
    required = [item for item in (*parser._actions, *parser._mutually_exclusive_groups) if item.required]
    for item in required:
        item.required = False
    try:
        first, _ = parser.parse_known_args(argv)
    finally:
        for item in required:
            item.required = True
    if first.params is None:
        return parser.parse_args(argv)
    values = dict(settings(first))
    for action in parser._actions:
        if action.dest in values:
            action.required = False
    for group in parser._mutually_exclusive_groups:
        if any(action.dest in values for action in group._group_actions):
            group.required = False
    parser.set_defaults(**values)
    return parser.parse_args(argv)
