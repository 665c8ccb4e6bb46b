"""Typed settings: frozen dataclasses built from YAML mappings, checked once, one line per problem."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align_mamba.core.errors import ConfigError


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")


def require_positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(value > 0, f"{name} must be > 0, got {value!r}")


def _accepts(annotation: Any, value: Any) -> bool:
    """Strict type check: YAML's '1e-3' (a string) or `true` must not pass as a number."""
    if annotation is float:
        # inf and nan parse from YAML (.inf, .nan) and would pass every `> 0` check downstream.
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        return isinstance(value, (list, tuple)) and all(_accepts(item, v) for v in value)
    if isinstance(annotation, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    return isinstance(value, annotation)


def check_mapping(cls: type, values: Mapping[str, Any], section: str) -> None:
    """Reject keys that are not fields of dataclass `cls` and values of the wrong type, by name."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    require(not unknown, f"unknown key(s) in {section}: {', '.join(unknown)}")
    for name, value in values.items():
        require(
            _accepts(hints[name], value),
            f"{section}.{name} must be {_type_name(hints[name])}, got {value!r} ({type(value).__name__})",
        )


def from_mapping(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and mistyped values by name."""
    check_mapping(cls, values, section)
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        item = typing.get_args(annotation)[0]
        return f"a list of {'integers' if item is int else 'numbers' if item is float else 'strings'}"
    if annotation is float:
        return "a finite number"
    return getattr(annotation, "__name__", str(annotation))


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; DVC's ruamel rejects the file. Reject it here too."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is written twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, what: str = "params file") -> Any:
    """The parsed YAML file; a missing file, a syntax error or a repeated key is one ConfigError line."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:  # a byte that is not UTF-8 fails in read_text
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None


DEVICES = ("auto", "cpu", "cuda")
# Mamba implementations: mamba-ssm kernels, the pure-PyTorch reference, or auto (kernels when they can run)
BACKENDS = ("auto", "kernels", "reference")


@dataclass(frozen=True)
class RunSettings:
    """Where every study's jobs run: device cpu | cuda | auto, backend kernels | reference | auto."""

    device: str = "auto"
    backend: str = "auto"

    def __post_init__(self) -> None:
        require_choice("device", self.device, DEVICES)
        require_choice("backend", self.backend, BACKENDS)
