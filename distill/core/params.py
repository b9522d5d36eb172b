"""Validated numbers for command-line options and config fields: finite, in range, ASCII digits only.

Every float or int option of a distilrank command uses one of the two click types here, so no command can
start with ``nan``, ``inf``, ``1e999`` or a count that overflows a C integer further down (a wait of
``nan`` ms that never ends, a BM25 ``k1`` of ``nan`` that scores every document 0, a relevance threshold
that pytrec_eval cannot hold). Python's own ``int()`` and ``float()`` accept any Unicode decimal digit
(``int("１０") == 10``); these types accept ASCII only, so what a user typed is what the command
echoes back in its reports.

* :class:`FiniteFloat` -- durations, weights, rates: ``FiniteFloat(min=0, max=86_400_000)`` for a wait in ms.
* :class:`Count` -- counts, sizes, thresholds: ``Count(min=1, max=2**31 - 1)``.

Config objects validate the same way with :func:`finite_float` and :func:`count`, which raise
:class:`~distill.core.errors.ConfigError` (exit 2) instead of click's usage error (also exit 2).
"""

from __future__ import annotations

import math
import re

import click

from distill.core.errors import ConfigError

__all__ = ["INT32_MAX", "INT64_MAX", "Count", "FiniteFloat", "count", "finite_float", "parse_ascii_float",
           "parse_ascii_int"]

#: the largest value of a C ``int`` (trec_eval's relevance grades and cut-offs)
INT32_MAX = 2**31 - 1
#: the largest value of a C ``long`` / numpy int64: the default ceiling of a :class:`Count`
INT64_MAX = 2**63 - 1

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _bounds(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False,
            x: str = "x") -> str:
    """``"0 <= x < 1"``; with ``x="FLOAT"`` the compact metavar form ``"0<=FLOAT<1"``."""
    sep = " " if x == "x" else ""
    left = "" if low is None else f"{_num(low)}{sep}{'<' if low_open else '<='}{sep}"
    right = "" if high is None or high == INT64_MAX else f"{sep}{'<' if high_open else '<='}{sep}{_num(high)}"
    return f"{left}{x}{right}"


def _in_range(value: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def parse_ascii_float(value: object) -> float | None:
    """The float that ``value`` spells in ASCII (``1``, ``-2.5``, ``.5``, ``1e-3``), or None. ``nan`` and ``inf``
    spelled out parse (callers refuse them); ``１``, ``1_000`` and ``0x10``, which ``float()`` takes, do not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if _FLOAT.fullmatch(text) or text.lower().lstrip("+-") in {"nan", "inf", "infinity"}:
        try:
            return float(text)
        except OverflowError:  # pragma: no cover - float() returns inf rather than raising
            return math.inf
    return None


def parse_ascii_int(value: object) -> int | None:
    """The int that ``value`` spells in ASCII digits with an optional sign (or an integral float), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip()
    return int(text) if _INT.fullmatch(text) else None


def finite_float(name: str, value: object, min: float | None = None, max: float | None = None, *,
                 min_open: bool = False, max_open: bool = False) -> float:
    """``value`` as a finite float within the bounds, else a :class:`ConfigError` naming ``name``."""
    number = parse_ascii_float(value)
    if number is None:
        raise ConfigError(f"{name} must be a number written in ASCII digits, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not _in_range(number, min, max, min_open, max_open):
        raise ConfigError(f"{name} must be in the range {_bounds(min, max, min_open, max_open)}, got {value!r}")
    return number


def count(name: str, value: object, min: int | None = 0, max: int | None = INT64_MAX) -> int:
    """``value`` as an int within ``[min, max]``, else a :class:`ConfigError` naming ``name``."""
    number = parse_ascii_int(value)
    if number is None:
        raise ConfigError(f"{name} must be an integer written in ASCII digits, got {value!r}")
    if not _in_range(number, min, max, False, False):
        raise ConfigError(f"{name} must be in the range {_bounds(min, max)}, got {value!r}")
    return number


class FiniteFloat(click.ParamType):
    """A click option type: a finite float in ``[min, max]`` (``min_open``/``max_open`` exclude the bound).

    Refuses ``nan``, ``inf``, values that overflow to ``inf`` (``1e999``) and non-ASCII digits (exit 2).
    """

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, *, min_open: bool = False,
                 max_open: bool = False):
        for bound in (min, max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"FiniteFloat bounds must be finite, got {bound!r}")
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return finite_float("the value", value, self.min, self.max, min_open=self.min_open,
                                max_open=self.max_open)
        except ConfigError as exc:
            self.fail(str(exc).replace("the value must", "must", 1), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return _bounds(self.min, self.max, self.min_open, self.max_open, x="FLOAT")

    def __repr__(self) -> str:
        return f"FiniteFloat({_bounds(self.min, self.max, self.min_open, self.max_open)})"


class Count(click.ParamType):
    """A click option type: an integer in ``[min, max]`` written in ASCII digits (exit 2 otherwise).

    ``max`` defaults to :data:`INT64_MAX`, so no count reaches numpy or a C library as an overflow.
    """

    name = "integer"

    def __init__(self, min: int | None = 0, max: int | None = INT64_MAX):
        self.min, self.max = min, max

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return count("the value", value, self.min, self.max)
        except ConfigError as exc:
            self.fail(str(exc).replace("the value must", "must", 1), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return _bounds(self.min, self.max, x="INTEGER")

    def __repr__(self) -> str:
        return f"Count({_bounds(self.min, self.max)})"
