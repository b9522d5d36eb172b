"""How the export gates score a candidate model: every gate list, the mixed batch alone and together, nDCG@10.

Shared by the exporter's ONNX Runtime recipes and its per-machine choice (:mod:`export._recipes`); the scorer is
the one of :mod:`distill.core.cross_encoder`, whatever runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export._candidates import CandidateLists
from export.config import ExportConfig
from export.gates import GateResult
from export.scorers import Pair


def mixed_batch(lists: CandidateLists) -> list[Pair]:
    """Up to 16 pairs from different queries, first and last candidates: mixed lengths and topics."""
    pairs: list[Pair] = []
    for qid in list(lists.run)[:8]:
        _, ps = lists.pairs(qid)
        pairs.extend([ps[0], ps[-1]])
    return pairs[:16]


@dataclass
class Scored:
    per_query: list[np.ndarray]
    alone: np.ndarray
    batched: np.ndarray
    ndcg: float | None = None
    gates: list[GateResult] = field(default_factory=list)


def score_lists(scorer: Any, lists: CandidateLists, cfg: ExportConfig | None = None) -> list[np.ndarray]:
    flat: list[Pair] = []
    sizes = []
    for qid in lists.run:
        _, ps = lists.pairs(qid)
        flat.extend(ps)
        sizes.append(len(ps))
    scores = scorer.score_pairs(flat)
    return np.split(scores, np.cumsum(sizes)[:-1])


def ndcg(scorer: Any, lists: CandidateLists, cfg: ExportConfig | None = None) -> float:
    from distill.core.evaluation import evaluate

    per_query = score_lists(scorer, lists, cfg)
    run = {qid: dict(zip(lists.run[qid], map(float, s), strict=True))
           for qid, s in zip(lists.run, per_query, strict=True)}
    # only the queries of the eval run: a qrels file judging more queries (a whole train split) would
    # average in zeros, shrinking nDCG and so every drop the gate compares to its tolerance
    qrels = {qid: rels for qid, rels in (lists.qrels or {}).items() if qid in run}
    return evaluate(qrels, run, ["ndcg@10"]).metrics["ndcg@10"]


def score_all(scorer: Any, gate_lists: CandidateLists, mixed: list[Pair], ndcg_lists: CandidateLists | None,
               cfg: ExportConfig | None = None) -> Scored:
    """Scores with ``scorer`` as it will be served; ``batched`` puts the mixed pairs in as few ONNX calls
    as the scorer's pairs per call allow (one call, unless the recipe caps the pairs per call)."""
    out = Scored(score_lists(scorer, gate_lists, cfg), scorer.with_pairs_per_call(1).score_pairs(mixed),
                  scorer.with_pairs_per_call(min(len(mixed), scorer.pairs_per_call)).score_pairs(mixed))
    if ndcg_lists is not None:
        out.ndcg = ndcg(scorer, ndcg_lists, cfg)
    return out
