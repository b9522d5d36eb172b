"""The dev signal of student training: which queries are held out, what they are judged against, what the student
reranks on them, how far that is from chance, and which checkpoint it picks.

**Split size** (:func:`dev_split_size`): ``round(n * dev_fraction)`` of the ``n`` labelled queries, at most
``dev_max_queries``, at least ``dev_min_queries`` but never more than half. With the defaults (15%, at least 5,
at most 100) a 54-query label file keeps 46 to train on (8 dev); 5 dev queries is the floor below which a
checkpoint choice is a coin toss, so under 34 queries the dev share rises above 15% (at most half).

**Relevance**: the qrels of the dev queries when they have any, else the teacher's own top
``pseudo_qrels_top`` candidates (:func:`pseudo_qrels`, ties in :func:`~distill.core.cross_encoder.tie_key` order).

**Candidates** (:func:`dev_first_stage`): with a dev run, its top ``dev_top_k`` of each dev query (the student
is judged as it will be used). Without one, *every* labelled candidate of the query, all at score 0.0 and so
all reranked: cutting a list of equal scores to ``dev_top_k`` would judge the student on an arbitrary slice
that mostly misses the teacher's top (with ids breaking the ties, the 20 smallest of 100).

**Distance from chance** (:func:`dev_signal_check`): a random order of ``n`` candidates holding total gain ``G``
has expected DCG@k ``G / n * sum_{i <= min(k, n)} 1 / log2(i + 1)``; divided by the query's ideal DCG (from all
of its judged documents, as trec_eval does) that is the random nDCG@k. The check reports the student's mean
nDCG@10, the random mean, and ``z`` = mean per-query difference / its standard error. A signal that moves is one
a trained student beats by several standard errors.

**Checkpoint choice** (:func:`choose_checkpoint`): every ``eval_steps`` the model is scored on the dev split
(per-query nDCG@10), and the final model is scored too.

* ``best``: the checkpoint with the highest mean (the earliest among equals). Right when the dev relevance is
  judgments.
* ``last_unless_beaten``: the final model, unless an earlier checkpoint beats it by more than
  ``checkpoint_margin_se`` standard errors of the per-query differences (paired over the dev queries; a
  one-query split never moves off the final model). When the only signal is the teacher's ranking of a few dev
  queries, the spread between checkpoints is mostly noise and the arg-max of noise is an arbitrary checkpoint;
  the final model has seen the whole learning-rate schedule, so it is the default and an earlier one has to
  earn its place beyond noise.
* ``auto`` (default): ``best`` with qrels, ``last_unless_beaten`` with the teacher's ranking.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from distill.core.cross_encoder import tie_key
from distill.core.errors import ConfigError, DataError
from distill.core.formats import Qrels, Query, Run
from distill.core.label_files import LabeledQuery

__all__ = ["CheckpointRule", "DevCheck", "DevSplit", "choose_checkpoint", "dev_evaluate", "dev_first_stage",
           "dev_signal_check", "dev_split_size", "pseudo_qrels", "random_ndcg", "resolve_rule"]

logger = logging.getLogger(__name__)

CheckpointRule = Literal["auto", "best", "last_unless_beaten"]
#: a per-query metric over the dev queries, by evaluated step
History = Mapping[int, Mapping[str, float]]


def dev_split_size(n: int, fraction: float, min_queries: int, max_queries: int) -> int:
    """Dev queries out of ``n``: ``round(n * fraction)`` capped at ``max_queries``, floored at ``min_queries``
    (but never above ``n // 2``), at least 1."""
    if n < 2:
        raise DataError(f"{n} labelled queries: a dev split needs at least 2 (one to train on, one to check)")
    return max(min(round(n * fraction), max_queries), min(min_queries, n // 2), 1)


def pseudo_qrels(labels: Iterable[LabeledQuery], top: int) -> Qrels:
    """The teacher's top ``top`` candidates of each query as its relevant documents (rel 1)."""
    out: Qrels = {}
    for lq in labels:
        ranked = sorted(lq.docs, key=lambda d: (-d.score, tie_key(lq.qid, d.doc_id)))
        out[lq.qid] = {d.doc_id: 1 for d in ranked[:top]}
    return out


@dataclass(frozen=True)
class DevSplit:
    """The held-out queries, their relevance and the candidates the student reranks on them."""

    qids: frozenset[str]
    qrels: Qrels
    #: "qrels" or "teacher ranking (top N)"
    signal: str
    queries: dict[str, Query]
    first_stage: Run
    #: candidates reranked per query (every labelled one when there is no dev run)
    top_k: int
    from_run: bool


def dev_first_stage(labels: Sequence[LabeledQuery], dev_ids: Iterable[str], dev_run: Run | None,
                    dev_top_k: int) -> tuple[Run, int]:
    """(first-stage candidates of the dev queries, how many of each to rerank); see the module docstring."""
    dev_ids = set(dev_ids)
    if dev_run is not None:
        return {q: d for q, d in dev_run.items() if q in dev_ids}, dev_top_k
    first = {lq.qid: dict.fromkeys((d.doc_id for d in lq.docs), 0.0) for lq in labels if lq.qid in dev_ids}
    return first, max((len(d) for d in first.values()), default=1)


def dev_evaluate(rerank: Callable[[Mapping[str, Query], Run, int], Run], split: DevSplit,
                 metrics: Sequence[str] = ("ndcg@10", "mrr@10")) -> tuple[Run, dict[str, float], dict[str, float]]:
    """(the dev run, mean metrics, per-query nDCG@10) of a reranker ``rerank(queries, first_stage, top_k)``."""
    from distill.core.evaluation import evaluate

    run = rerank(split.queries, split.first_stage, split.top_k)
    res = evaluate(split.qrels, run, list(dict.fromkeys(["ndcg@10", *metrics])))
    return run, {m: res.metrics[m] for m in metrics}, {q: v["ndcg@10"] for q, v in res.per_query.items()}


def _dcg_discounts(n: int) -> float:
    return math.fsum(1.0 / math.log2(i + 1) for i in range(1, n + 1))


def random_ndcg(candidate_gains: Sequence[float], n_candidates: int, judged_gains: Sequence[float],
                k: int = 10) -> float:
    """Expected nDCG@k of a uniformly random order of ``n_candidates`` documents.

    ``candidate_gains``: the gains (relevance > 0) of the judged documents among the candidates;
    ``judged_gains``: the gains of every judged document of the query (the ideal DCG's)."""
    ideal = sorted((g for g in judged_gains if g > 0), reverse=True)[:k]
    if not ideal or n_candidates < 1:
        return 0.0
    idcg = math.fsum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    mean_gain = math.fsum(g for g in candidate_gains if g > 0) / n_candidates
    return mean_gain * _dcg_discounts(min(k, n_candidates)) / idcg


@dataclass(frozen=True)
class DevCheck:
    """The student's dev nDCG@10 against a random order of the same candidates."""

    ndcg10: float
    random_ndcg10: float
    #: standard error of the mean per-query difference (student - random); inf for one query
    se: float
    #: (ndcg10 - random_ndcg10) / se
    z: float
    n_queries: int

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready: rounded, and None for an infinite standard error or z (a one-query split)."""
        return {k: (round(v, 6) if math.isfinite(v) else None) if isinstance(v, float) else v
                for k, v in asdict(self).items()}


def dev_signal_check(qrels: Qrels, candidates: Run, per_query: Mapping[str, float], k: int = 10) -> DevCheck:
    """How far the per-query nDCG@k of a run over ``candidates`` is from a random order of them."""
    diffs: list[float] = []
    rand: list[float] = []
    for qid, rel in qrels.items():
        if not any(g > 0 for g in rel.values()):
            continue
        docs = candidates.get(qid, {})
        r = random_ndcg([rel.get(d, 0) for d in docs], len(docs), list(rel.values()), k)
        rand.append(r)
        diffs.append(per_query.get(qid, 0.0) - r)
    if not diffs:
        raise DataError("no dev query has a relevant document; the dev signal cannot be checked")
    n = len(diffs)
    mean = math.fsum(diffs) / n
    se = _se(diffs)
    z = mean / se if se > 0 else (math.inf if mean > 0 else 0.0)
    return DevCheck(mean + math.fsum(rand) / n, math.fsum(rand) / n, se, z, n)


def _se(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return math.inf
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n)


def resolve_rule(rule: CheckpointRule, signal: str) -> Literal["best", "last_unless_beaten"]:
    if rule not in ("auto", "best", "last_unless_beaten"):
        raise ConfigError(f"checkpoint_rule must be auto, best or last_unless_beaten, got {rule!r}")
    if rule != "auto":
        return rule
    return "best" if signal == "qrels" else "last_unless_beaten"


def choose_checkpoint(history: History, rule: Literal["best", "last_unless_beaten"],
                      margin_se: float = 2.0) -> tuple[int, str]:
    """(the chosen step, why) among the evaluated steps of ``history`` (see the module docstring)."""
    if not history:
        raise ValueError("no evaluated checkpoint to choose from")
    means = {step: math.fsum(pq.values()) / max(len(pq), 1) for step, pq in history.items()}
    best = max(sorted(means), key=lambda s: means[s])  # sorted: the earliest among equal means
    last = max(history)
    if rule == "best" or best == last:
        return best, f"highest mean dev nDCG@10 ({means[best]:.4f} at step {best})"
    diffs = [history[best].get(q, 0.0) - history[last].get(q, 0.0) for q in history[last]]
    se = _se(diffs)
    gain = means[best] - means[last]
    if gain > margin_se * se:
        return best, (f"step {best} beats the final step {last} by {gain:.4f} dev nDCG@10, more than "
                      f"{margin_se:g} standard errors ({se:.4f})")
    return last, (f"final step {last} ({means[last]:.4f}); the best, step {best} ({means[best]:.4f}), is within "
                  f"{margin_se:g} standard errors ({se:.4f}) of it")
