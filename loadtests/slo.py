"""SLO files and the threshold checker used by the Locust ``quitting`` hook.

An SLO file is JSON, one per scenario::

    {
      "scenario": "ranker",
      "total":     {"p50_ms": 2000, "p95_ms": 4000, "p99_ms": 6000, "max_error_ratio": 0.01, "min_rps": 0.2},
      "endpoints": {"POST /v1/rerank": {"p95_ms": 4000}}
    }

Every limit is optional; an absent limit is not checked. ``total`` applies to the aggregate of all
requests, each ``endpoints`` entry (``"METHOD name"``, as Locust names requests) to one endpoint.
An endpoint named in the SLO that received no request is itself a violation (a silent scenario
must not pass).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.core.errors import DataError

__all__ = ["SLO", "Limits", "Violation", "check_slo", "load_slo"]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p50_ms: float | None = Field(default=None, gt=0)
    p95_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)
    max_error_ratio: float | None = Field(default=None, ge=0, le=1)
    min_rps: float | None = Field(default=None, ge=0)


class SLO(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: Literal["ranker", "opensearch"]
    description: str = ""
    total: Limits = Field(default_factory=Limits)
    endpoints: dict[str, Limits] = Field(default_factory=dict)


def load_slo(path: str | os.PathLike[str]) -> SLO:
    """Read and validate an SLO file; errors name the file and the offending field."""
    path = Path(path)
    if not path.is_file():
        raise DataError("SLO file not found", path=path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno,
                        expected='{"scenario": "ranker", "total": {"p95_ms": ...}, "endpoints": {...}}') from exc
    try:
        return SLO.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise DataError(f"invalid SLO: {problems}", path=path,
                        expected="limits p50_ms/p95_ms/p99_ms (> 0), max_error_ratio (0..1), min_rps (>= 0)") from exc


class _Stats(Protocol):
    """The part of ``locust.stats.StatsEntry`` the checker reads."""

    num_requests: int
    num_failures: int

    def get_response_time_percentile(self, percent: float) -> float: ...

    @property
    def total_rps(self) -> float: ...


@dataclass(frozen=True)
class Violation:
    target: str
    metric: str
    limit: float
    measured: float

    def __str__(self) -> str:
        op = ">=" if self.metric == "min_rps" else "<="
        return f"SLO violated: {self.target} {self.metric} = {self.measured:.4g} (limit {op} {self.limit:g})"


def _check(target: str, limits: Limits, stats: _Stats | None) -> list[Violation]:
    if stats is None or stats.num_requests == 0:
        return [Violation(target, "num_requests", 1, 0)]
    out: list[Violation] = []
    for metric, pct in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        limit = getattr(limits, metric)
        if limit is not None:
            measured = float(stats.get_response_time_percentile(pct))
            if measured > limit:
                out.append(Violation(target, metric, limit, measured))
    ratio = stats.num_failures / stats.num_requests
    if limits.max_error_ratio is not None and ratio > limits.max_error_ratio:
        out.append(Violation(target, "max_error_ratio", limits.max_error_ratio, ratio))
    if limits.min_rps is not None and stats.total_rps < limits.min_rps:
        out.append(Violation(target, "min_rps", limits.min_rps, float(stats.total_rps)))
    return out


def check_slo(slo: SLO, total: _Stats, endpoints: dict[str, _Stats]) -> list[Violation]:
    """All violations of ``slo``; ``endpoints`` maps ``"METHOD name"`` to that endpoint's stats."""
    violations = _check("total", slo.total, total)
    for name, limits in slo.endpoints.items():
        violations += _check(name, limits, endpoints.get(name))
    return violations
