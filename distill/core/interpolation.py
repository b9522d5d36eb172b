"""The blend of first-stage and ranker scores that the pipeline measures and every serving path applies.

Per query, over the window of ``depth`` first-stage hits that the ranker scored::

    final = w * norm_fs(first_stage) + (1 - w) * norm_r(ranker)

``w`` is :attr:`Interpolation.first_stage_weight`; each ``norm`` is ``minmax``, ``zscore`` or ``none``
(:mod:`distill.core.normalization`), taken over the window only. The ranker's scores enter in
:attr:`Interpolation.score_convention` (raw logits by default: what the student was distilled to produce).

One implementation, three callers: the pipeline's ``student_interpolated`` run, client-side rescoring
(``opensearch_plugin.rescore_hits``) and the parity check against the Java plugin, which implements the
same arithmetic in doubles. Exact ties in the blended score are broken by doc id (ascending), on every path,
so two paths that agree on the scores agree on the order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from distill.core.errors import ConfigError
from distill.core.formats import Run
from distill.core.normalization import RunNorm, normalize_values

__all__ = ["CONSERVATIVE_FIRST_STAGE_WEIGHT", "ChosenBy", "Interpolation", "ScoreConvention", "blend",
           "interpolate_runs", "rank_blended"]

ScoreConvention = Literal["raw_logit", "sigmoid"]
#: ``dev_qrels``: tuned by grid search on real dev judgments; ``default``: not tuned (no real judgments)
ChosenBy = Literal["dev_qrels", "default"]

#: the first-stage weight on z-scores when no real judgments can tune it: the first stage keeps the larger
#: share, so an untested student can move a hit a few places but cannot bury the first stage's best hits
CONSERVATIVE_FIRST_STAGE_WEIGHT = 0.6
_NORMS = ("minmax", "zscore", "none")


@dataclass(frozen=True)
class Interpolation:
    """How to blend the first stage and the ranker, as tuned for (and recorded in) one served model."""

    first_stage_weight: float
    first_stage_norm: RunNorm = "minmax"
    ranker_norm: RunNorm = "none"
    #: how ``first_stage_weight`` was chosen
    chosen_by: ChosenBy = "default"
    #: the window (first-stage hits per query) the weight was tuned at; serve it at the same depth
    depth: int = 20
    #: the convention of the ranker scores the blend expects
    score_convention: ScoreConvention = "raw_logit"
    #: the dev metric and its value at the chosen weight, when tuned (information only)
    dev_metric: str | None = None
    dev_score: float | None = None

    def __post_init__(self) -> None:
        w = self.first_stage_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or not 0.0 <= w <= 1.0:
            raise ConfigError(f"interpolation.first_stage_weight must be a number in [0, 1], got {w!r}")
        for name in ("first_stage_norm", "ranker_norm"):
            if getattr(self, name) not in _NORMS:
                raise ConfigError(f"interpolation.{name} must be one of {', '.join(_NORMS)}, "
                                  f"got {getattr(self, name)!r}")
        if self.chosen_by not in ("dev_qrels", "default"):
            raise ConfigError(f"interpolation.chosen_by must be dev_qrels or default, got {self.chosen_by!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ConfigError(f"interpolation.depth must be a positive integer, got {self.depth!r}")
        if self.score_convention not in ("raw_logit", "sigmoid"):
            raise ConfigError("interpolation.score_convention must be raw_logit or sigmoid, "
                              f"got {self.score_convention!r}")

    @classmethod
    def conservative(cls, depth: int = 20) -> Interpolation:
        """The documented fallback when nothing was tuned (no real judgments, or an older export)."""
        return cls(CONSERVATIVE_FIRST_STAGE_WEIGHT, "zscore", "zscore", "default", depth)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interpolation:
        if not isinstance(data, Mapping):
            raise ConfigError(f"interpolation must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"interpolation has unknown keys {sorted(unknown)}")
        if "first_stage_weight" not in data:
            raise ConfigError("interpolation.first_stage_weight is missing")
        return cls(**dict(data))

    def blend(self, first_stage: Sequence[float], ranker: Sequence[float]) -> list[float]:
        return blend(first_stage, ranker, self)


def blend(first_stage: Sequence[float], ranker: Sequence[float], spec: Interpolation) -> list[float]:
    """Blended scores of one query's window, in input order (both sequences score the same hits)."""
    if len(first_stage) != len(ranker):
        raise ValueError(f"{len(first_stage)} first-stage scores but {len(ranker)} ranker scores for one window")
    w = spec.first_stage_weight
    fs = normalize_values(first_stage, spec.first_stage_norm)
    rk = normalize_values(ranker, spec.ranker_norm)
    return [w * f + (1.0 - w) * r for f, r in zip(fs, rk, strict=True)]


def rank_blended(doc_ids: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Indices of the hits in blended order: score descending, exact ties by doc id ascending."""
    return sorted(range(len(doc_ids)), key=lambda i: (-scores[i], doc_ids[i]))


def interpolate_runs(first_stage: Run, ranker: Run, spec: Interpolation) -> Run:
    """Blend over the ranker's candidates (the window) of each query; a candidate the first stage did not
    return counts as first-stage score 0."""
    out: Run = {}
    for qid, docs in ranker.items():
        ids = list(docs)
        fs = [first_stage.get(qid, {}).get(d, 0.0) for d in ids]
        out[qid] = dict(zip(ids, blend(fs, [docs[d] for d in ids], spec), strict=True))
    return out
