"""Build (nested) frozen config dataclasses from JSON files / dicts, rejecting unknown keys (teacher and student configs)."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from distill.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "config") -> T:
    """``cls(**data)`` with nested dataclasses built recursively; errors name the offending key."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_mapping(hint, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(cls: type[T], path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> T:
    """Read ``path`` (JSON object) if given, apply non-None ``overrides`` (CLI flags) and validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} not found") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg}); the config must be one JSON object") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the config must be a JSON object, got {type(loaded).__name__}")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_mapping(cls, data, where=str(path) if path else cls.__name__)


def to_dict(obj: object) -> dict[str, Any]:
    return dataclasses.asdict(obj)  # type: ignore[arg-type]
