"""Config loading, the one way: JSON or TOML files into frozen, validated dataclasses.

Part of the base layer (see README "Architecture"): imports nothing above :mod:`distill.core.errors`.
Every problem with a config -- a missing file, bad JSON/TOML, an unknown key anywhere, a value of
the wrong type -- is a :class:`~distill.core.errors.ConfigError` (exit code 2) that names the file, the
line where the parser knows it, and the dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from distill.core.errors import ConfigError

__all__ = ["choices", "default", "from_mapping", "load_config", "read_config_file", "to_dict"]

T = TypeVar("T")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """One JSON (``.json`` or anything else) or TOML (``.toml``) object as a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found (or not a file)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not valid UTF-8 ({exc.reason}); save the config as UTF-8") from exc
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg}); the config must be one JSON object") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the config must be one object, got {type(data).__name__}")
    return data


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "config") -> T:
    """``cls(**data)`` with nested dataclasses built recursively; errors name the offending key. A dataclass may
    map keys it once had to their new names in a ``RENAMED_KEYS`` class variable: an old key is still an unknown
    key, and its error names the key to use instead."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object (a table of keys), got {type(data).__name__}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        renamed: Mapping[str, str] = getattr(cls, "RENAMED_KEYS", {})
        advice = "".join(f"; {k!r} is now called {renamed[k]!r}: rename it" for k in unknown if k in renamed)
        raise ConfigError(f"{where}: unknown key(s) {unknown}{advice}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if isinstance(value, Mapping):
                value = from_mapping(hint, value, f"{where}.{name}")
            elif not isinstance(value, hint):
                raise ConfigError(f"{where}.{name}: expected an object, got {type(value).__name__}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(cls: type[T], path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> T:
    """Read ``path`` (JSON or TOML object) if given, apply non-None ``overrides`` (CLI flags) and validate."""
    data: dict[str, Any] = read_config_file(path) if path is not None else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_mapping(cls, data, where=str(path) if path else cls.__name__)


def to_dict(obj: object) -> dict[str, Any]:
    return dataclasses.asdict(obj)  # type: ignore[call-overload]


def default(cls: type, name: str) -> Any:
    """The default of dataclass field ``name``: CLI options take their defaults from the config, never a literal."""
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def choices(cls: type, name: str) -> list[str]:
    """The values of a ``Literal[...]`` field (``X | None`` unwrapped), for ``click.Choice``."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is typing.Literal:
        args = list(typing.get_args(args[0]))
    if not args or not all(isinstance(a, str) for a in args):
        raise TypeError(f"{cls.__name__}.{name} is not a Literal of strings")
    return list(args)
