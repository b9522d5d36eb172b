"""Per-query score normalisation: the one z-score and min-max used everywhere (base layer).

Three places normalise a query's scores: teacher labels before distillation
(``distill.student.normalize``), ensemble members before they are summed
(``distill.teacher.sources``), and first-stage/student runs before interpolation
(``distill.student.interpolate``). They all call these functions, so a query whose candidates all
got one score is handled one way: every normalised score is 0 (std floored at ``min_std``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from distill.core.formats import Run

__all__ = ["RunNorm", "minmax", "normalize_run", "normalize_values", "zscore", "zscore_run"]

RunNorm = Literal["minmax", "zscore", "none"]

#: std floor: a query whose candidates all got one score normalises to all zeros, never NaN
MIN_STD = 1e-6


def zscore(values: Sequence[float], min_std: float = MIN_STD) -> list[float]:
    """``(v - mean) / max(std, min_std)`` with the population std."""
    if not values:
        return []
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    std = max(std, min_std)
    return [(v - mean) / std for v in values]


def minmax(values: Sequence[float]) -> list[float]:
    """To [0, 1]; all zeros when every value is the same."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    return [0.0 if hi == lo else (v - lo) / (hi - lo) for v in values]


def normalize_values(values: Sequence[float], how: RunNorm) -> list[float]:
    if how == "none":
        return [float(v) for v in values]
    return minmax(values) if how == "minmax" else zscore(values)


def normalize_run(run: Run, how: RunNorm) -> Run:
    """Normalise each query's scores separately (doc order kept)."""
    out: Run = {}
    for qid, docs in run.items():
        ids = list(docs)
        out[qid] = dict(zip(ids, normalize_values([docs[d] for d in ids], how), strict=True))
    return out


def zscore_run(run: Run) -> Run:
    return normalize_run(run, "zscore")
