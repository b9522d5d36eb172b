"""Interpolate first-stage and student scores: ``final = a * norm(first_stage) + (1 - a) * norm(student)``.

This mirrors an OpenSearch rescore (``query_weight`` = a, ``rescore_query_weight`` = 1 - a), so
``a`` and both normalisations are exported in ``interpolation.json`` for the serving side.
``a`` is tuned by grid search on a dev split (never on the evaluation queries).

Normalisations, per query over the reranked candidates: ``minmax`` (to [0, 1]; default for the
first stage, whose BM25 scale varies by query length), ``zscore``, or ``none`` (default for the
student, whose logits were distilled from per-query standardised teacher scores and so are
already on a comparable scale). Candidates the student did not score keep only their
first-stage term, scaled by ``a``, and so stay below re-scored ones only if the caller reranks
the whole top-k (the pipeline does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.core.atomic_io import write_json
from distill.core.errors import ConfigError, DataError
from distill.core.formats import Qrels, Run
from distill.core.normalization import RunNorm, normalize_run

__all__ = ["InterpolationConfig", "InterpolationResult", "interpolate_runs", "load_interpolation", "normalize_run",
           "tune_alpha"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class InterpolationConfig:
    first_stage_norm: RunNorm = "minmax"
    student_norm: RunNorm = "none"
    #: grid of a values tried on the dev split (a = weight of the first stage)
    grid_steps: int = 21
    metric: str = "ndcg@10"

    def __post_init__(self) -> None:
        for name in ("first_stage_norm", "student_norm"):
            if getattr(self, name) not in ("minmax", "zscore", "none"):
                raise ConfigError(f"interpolation.{name} must be minmax, zscore or none, got {getattr(self, name)!r}")
        if self.grid_steps < 2:
            raise ConfigError(f"interpolation.grid_steps must be >= 2, got {self.grid_steps}")


@dataclass(frozen=True)
class InterpolationResult:
    alpha: float
    first_stage_norm: str
    student_norm: str
    dev_metric: str
    dev_score: float
    dev_score_student_only: float
    dev_score_first_stage_only: float
    n_dev_queries: int
    #: how ``alpha`` was chosen (tuned on real dev judgments, or a conservative default)
    tuned_on: str = "dev split of the training queries (real qrels)"

    def save(self, path: str | Path) -> Path:
        return write_json(path, asdict(self))


def interpolate_runs(first_stage: Run, student: Run, alpha: float, config: InterpolationConfig) -> Run:
    """Combine over the student's candidates (the reranked top-k) of each query."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"interpolation weight a must be in [0, 1], got {alpha}")
    fs_sub = {qid: {d: first_stage.get(qid, {}).get(d, 0.0) for d in docs} for qid, docs in student.items()}
    fs_n = normalize_run(fs_sub, config.first_stage_norm)
    st_n = normalize_run(student, config.student_norm)
    return {qid: {d: alpha * fs_n[qid][d] + (1 - alpha) * st_n[qid][d] for d in docs} for qid, docs in student.items()}


def tune_alpha(qrels: Qrels, first_stage: Run, student: Run, config: InterpolationConfig) -> InterpolationResult:
    """Grid-search a in [0, 1] on a dev split; ties go to the smaller a (trust the student)."""
    from distill.core.evaluation import evaluate

    dev = {qid: docs for qid, docs in student.items() if qid in qrels and docs}
    if not dev:
        raise DataError("no dev query has both student scores and qrels; cannot tune the interpolation weight")
    dev_qrels = {qid: qrels[qid] for qid in dev}
    best_a, best = 0.0, -1.0
    scores: dict[float, float] = {}
    for i in range(config.grid_steps):
        a = i / (config.grid_steps - 1)
        val = evaluate(dev_qrels, interpolate_runs(first_stage, dev, a, config), [config.metric]).metrics[config.metric]
        scores[a] = val
        if val > best + 1e-12:
            best_a, best = a, val
    logger.info("interpolation: a=%.2f gives dev %s %.4f (student only %.4f, first stage only %.4f)",
                best_a, config.metric, best, scores[0.0], scores[1.0])
    return InterpolationResult(best_a, config.first_stage_norm, config.student_norm, config.metric, best,
                               scores[0.0], scores[1.0], len(dev))


def load_interpolation(path: str | Path) -> InterpolationResult:
    import json

    try:
        return InterpolationResult(**json.loads(Path(path).read_text()))
    except (OSError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"bad interpolation file: {exc}", path=path,
                        expected="JSON written by distill.student.interpolate (alpha, first_stage_norm, ...)") from exc


def restrict(run: Run, qids: Mapping[str, object]) -> Run:
    return {q: d for q, d in run.items() if q in qids}
