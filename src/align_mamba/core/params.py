"""Typed settings: frozen dataclasses built from YAML mappings, checked once, one line per problem."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

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
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(annotation) is tuple:
        return isinstance(value, (list, tuple)) and all(_accepts(int, v) for v in value)
    if isinstance(annotation, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    return isinstance(value, annotation)


def from_mapping(cls: type, values: Mapping[str, Any], section: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and mistyped values by name."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    require(not unknown, f"unknown key(s) in {section}: {', '.join(unknown)}")
    for name, value in values.items():
        require(_accepts(hints[name], value),
                 f"{section}.{name} must be {_type_name(hints[name])}, got {value!r} ({type(value).__name__})")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is tuple:
        return "a list of integers"
    return getattr(annotation, "__name__", str(annotation))


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
