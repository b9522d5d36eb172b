"""The never-regress guard: a student that does not beat the first stage on dev is not shipped silently.

One decision for ``student train --dev-run`` (and the pipeline): on the dev split, the first stage, the student
alone and the interpolated student are each scored (nDCG@10,
:class:`~distill.student.interpolate.InterpolationResult`).
It is a regression when **neither** the student alone nor the interpolated student scores above the first stage.
The caller writes its result files first, then exits 5 (``GateFailedError``) unless told to accept it.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.student.interpolate import InterpolationResult

__all__ = ["DevVerdict", "dev_verdict"]


@dataclass(frozen=True)
class DevVerdict:
    regression: bool
    #: one line for the top of a report
    message: str
    first_stage: float
    student: float
    interpolated: float
    alpha: float


def dev_verdict(interp: InterpolationResult, dev_labels: str) -> DevVerdict:
    """``dev_labels`` says what the dev relevance is (e.g. "real qrels", "teacher ranking (top 3)")."""
    fs, st, it = interp.dev_score_first_stage_only, interp.dev_score_student_only, interp.dev_score
    metric = interp.dev_metric
    scores = (f"student {st:.4f}, interpolated (a = {interp.alpha:.2f}) {it:.4f}, first stage {fs:.4f} "
              f"({metric}, {interp.n_dev_queries} dev queries, {dev_labels})")
    regression = not (st > fs or it > fs)
    if regression:
        message = ("REGRESSION: neither the student nor the interpolated student beats the first stage on dev: "
                   f"{scores}")
    else:
        message = f"OK: on dev, {scores}"
    return DevVerdict(regression, message, fs, st, it, interp.alpha)
