"""Quality and parity gates of an exported model. Each returns a :class:`GateResult`; none raises.

All comparisons are on real (query, candidates) lists; scores are raw logits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from distill.core.errors import GateFailedError

__all__ = ["GateResult", "batch_invariance_gate", "ndcg_gate", "parity_gate", "ranking_agreement", "raise_if_failed",
           "relative_parity_gate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateResult:
    """``value`` compared with ``threshold`` by ``op`` ("<=" or ">="); ``detail`` holds extra numbers."""

    name: str
    value: float
    threshold: float
    op: str
    passed: bool
    detail: dict[str, float] | None = None

    def describe(self) -> str:
        verdict = "passed" if self.passed else f"FAILED by {abs(self.value - self.threshold):.4g}"
        return f"{self.name}: {self.value:.4g} (required {self.op} {self.threshold:.4g}) {verdict}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _check(name: str, value: float, threshold: float, op: str, detail: dict[str, float] | None = None) -> GateResult:
    value = float(value)
    ok = bool(np.isfinite(value)) and (value <= threshold if op == "<=" else value >= threshold)
    return GateResult(name, value, float(threshold), op, ok, detail)


def parity_gate(reference: np.ndarray, candidate: np.ndarray, max_abs_diff: float,
                name: str = "onnx_vs_pytorch") -> GateResult:
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))
    return _check(f"{name}_max_abs_diff", diff.max(initial=0.0), max_abs_diff, "<=",
                  {"mean_abs_diff": float(diff.mean())})


def relative_parity_gate(reference: np.ndarray, candidate: np.ndarray, score_std: float, max_rel_diff: float,
                         name: str) -> GateResult:
    """max |reference - candidate| / ``score_std`` (the spread of the fp32 scores): a reduced-precision path (bf16)
    judged in units of the scores it must keep apart, whatever the student's logit scale."""
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))
    worst = diff.max(initial=0.0)
    rel = worst / score_std if score_std > 0 else (0.0 if worst == 0 else float("inf"))
    return _check(f"{name}_max_rel_diff", rel, max_rel_diff, "<=",
                  {"max_abs_diff": float(worst), "mean_abs_diff": float(diff.mean()), "score_std": float(score_std)})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.ptp(a) == np.ptp(b) == 0 else 0.0
    return float(spearmanr(a, b).statistic)


def ranking_agreement(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], spearman_median_min: float,
                      spearman_worst_min: float, top10_overlap_mean_min: float,
                      prefix: str = "int8") -> list[GateResult]:
    """Per-query Spearman (median, worst) and top-10 overlap (mean) of candidate vs reference scores; gate names
    start with ``prefix`` (the precision or recipe judged)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"need matching non-empty per-query score lists, got {len(reference)} and {len(candidate)}")
    rho, overlap = [], []
    for ref, cand in zip(reference, candidate, strict=True):
        rho.append(_spearman(ref, cand))
        k = min(10, len(ref))
        overlap.append(len(set(np.argsort(-ref, kind="stable")[:k]) & set(np.argsort(-cand, kind="stable")[:k])) / k)
    rho_a, ov = np.asarray(rho), np.asarray(overlap)
    extra = {"queries": float(len(rho)), "spearman_mean": float(rho_a.mean()), "top10_overlap_worst": float(ov.min())}
    return [
        _check(f"{prefix}_spearman_median", np.median(rho_a), spearman_median_min, ">=", extra),
        _check(f"{prefix}_spearman_worst", rho_a.min(), spearman_worst_min, ">=", extra),
        _check(f"{prefix}_top10_overlap_mean", ov.mean(), top10_overlap_mean_min, ">=", extra),
    ]


def ndcg_gate(ndcg_reference: float, ndcg_candidate: float, max_drop_points: float, prefix: str = "int8") -> GateResult:
    drop = 100.0 * (ndcg_reference - ndcg_candidate)
    return _check(f"{prefix}_ndcg@10_drop_points", drop, max_drop_points, "<=",
                  {"ndcg@10_fp32": ndcg_reference, f"ndcg@10_{prefix}": ndcg_candidate})


def batch_invariance_gate(alone: np.ndarray, batched: np.ndarray, score_std: float, max_rel_diff: float,
                          name: str = "batch_invariance") -> GateResult:
    """Scores of the same pairs computed one at a time vs inside a mixed batch, relative to ``score_std``."""
    diff = np.abs(np.asarray(alone, np.float64) - np.asarray(batched, np.float64)).max(initial=0.0)
    rel = diff / score_std if score_std > 0 else (0.0 if diff == 0 else float("inf"))
    return _check(f"{name}_max_rel_diff", rel, max_rel_diff, "<=",
                  {"max_abs_diff": float(diff), "score_std": float(score_std)})


def raise_if_failed(results: Mapping[str, GateResult] | Sequence[GateResult], what: str) -> None:
    items = list(results.values()) if isinstance(results, Mapping) else list(results)
    failed = [r for r in items if not r.passed]
    if failed:
        raise GateFailedError(f"{what} failed {len(failed)} gate(s): " + "; ".join(r.describe() for r in failed))
