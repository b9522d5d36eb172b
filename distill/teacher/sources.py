"""Teacher sources: everything that can score (query, candidate) pairs for distillation, behind one interface.

A source maps ``{qid: Query}`` and ``{qid: [doc_id, ...]}`` to a run ``{qid: {doc_id: score}}`` that
covers every candidate (higher = more relevant; the scale is the source's own):

* ``bm25``: the in-process BM25 score of each candidate (:mod:`distill.core.bm25`);
* ``dense``: bi-encoder cosine (default all-MiniLM-L6-v2 from its PyPI package, or a local dir);
* ``llm``: the CPT+SFT decoder teacher, score ``head`` (linear head on the final token) or ``qlm``
  (RankingGPT's query likelihood: mean log p(query tokens | document prompt), usable zero-shot);
* ``run``: a TREC run from anywhere (e.g. a 7B LLM reranker run on a GPU box). A candidate the run
  does not rank gets the query's lowest run score minus 1: "below everything the teacher ranked";
* ``endpoint``: any rerank server (Cohere v1/v2, Jina, vLLM /rerank and /score, TEI, Infinity, or
  ``distilrank serve`` of a larger model), its request and answer shapes detected; batched, concurrent,
  retried with backoff;
* ``openai``: any LLM behind an OpenAI-compatible server, P(yes) log-odds or query likelihood from logprobs
  (:mod:`distill.teacher.openai_source`), through the same HTTP client and answer checks as ``endpoint``;
* ``ensemble``: a per-query z-scored weighted sum of members, weights fitted on dev queries with
  qrels by coordinate ascent on nDCG@10 (:func:`fit_weights`).

Labels files (:mod:`distill.core.label_files`) are written one query at a time by :mod:`distill.teacher.label`,
so every source is resumable in the same way.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from distill.core.errors import ConfigError, DataError
from distill.core.formats import Document, Qrels, Query, Run, read_run
from distill.core.normalization import zscore_run
from distill.teacher._endpoint import (
    EndpointClient,
    EndpointConfig,
    EndpointError,
    EndpointRefused,
    answer_error,
    expected_rerank,
    guess_format,
    needs_texts,
    read_rerank,
    rerank_request,
)

__all__ = ["SOURCE_NAMES", "BM25Source", "DenseSource", "EndpointConfig", "EndpointError", "EndpointSource",
           "EnsembleSource", "LLMSource", "RunSource", "SLOW_SOURCES", "TeacherSource", "fit_weights", "remote_source",
           "scored_qids", "zscore_run"]

logger = logging.getLogger(__name__)

SOURCE_NAMES = ("llm", "run", "endpoint", "openai", "dense", "bm25", "ensemble")
Candidates = Mapping[str, Sequence[str]]


class TeacherSource(Protocol):
    name: str

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        """Scores of every candidate of every query (the caller batches queries as it likes)."""
        ...


class BM25Source:
    name = "bm25"

    def __init__(self, corpus: Mapping[str, Document], index: Any = None):
        from distill.core.bm25 import BM25Index

        self.index = index or BM25Index(corpus)

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        return {qid: self.index.score_docs(queries[qid].text, docs) for qid, docs in candidates.items()}


class DenseSource:
    name = "dense"

    def __init__(self, corpus: Mapping[str, Document], model: str = "default", cache_dir: Path | None = None,
                 retriever: Any = None):
        from distill.teacher.candidates import DenseRetriever

        self.retriever = retriever or DenseRetriever(corpus, model, cache_dir)

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        return self.retriever.score_docs({q: queries[q] for q in candidates}, candidates)


class RunSource:
    """Scores read from a TREC run file; unranked candidates go below the query's last ranked one."""

    name = "run"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.run = read_run(self.path)

    def candidates(self, qid: str, depth: int) -> list[str]:
        docs = self.run.get(qid, {})
        return [d for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]]

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        out: Run = {}
        for qid, docs in candidates.items():
            ranked = self.run.get(qid)
            if not ranked:
                raise DataError(f"the teacher run has no results for query {qid!r}; label only queries the run covers "
                                "(or re-run the teacher on them)", path=self.path)
            floor = min(ranked.values()) - 1.0
            out[qid] = {d: ranked.get(d, floor) for d in docs}
        return out


class EndpointSource:
    """Any rerank server: ``POST {url}`` in the server's documented request shape (``config.format``; ``auto``
    detects it), answers read by :func:`distill.teacher._endpoint.read_rerank` whatever their documented shape
    (Cohere v1/v2, Jina, vLLM /rerank and /score, TEI, Infinity). Documents go in batches of ``batch_size``,
    up to ``concurrency`` requests in flight, through :class:`~distill.teacher._endpoint.EndpointClient`
    (retries, backoff, Retry-After); refusals and malformed answers are :class:`EndpointError` (exit code 3)."""

    name = "endpoint"

    def __init__(self, corpus: Mapping[str, Document], config: EndpointConfig, client: Any = None):
        self.corpus = corpus
        self.config = config
        self.http = EndpointClient(config, client, what="rerank endpoint", answer="a rerank response")
        self.format = guess_format(config.url) if config.format == "auto" else config.format
        self._shape: str | None = None

    def _post(self, query: str, docs: list[str]) -> list[float]:
        cfg = self.config
        fmt = self.format
        try:
            payload = self.http.post_json(cfg.url, rerank_request(fmt, cfg.url, query, docs, cfg.model))
        except EndpointRefused as exc:
            if cfg.format != "auto" or fmt != "cohere" or not needs_texts(exc):
                raise
            logger.info("endpoint: %s asks for `texts`: sending text-embeddings-inference's /rerank shape", cfg.url)
            self.format = "tei"
            return self._post(query, docs)
        try:
            shape, scores = read_rerank(payload, len(docs))
        except ValueError as exc:
            raise answer_error(self.http, cfg.url, exc, payload, expected_rerank()) from exc
        if shape != self._shape:
            logger.info("endpoint: %s answers in the %s shape", cfg.url, shape)
            self._shape = shape
        return scores

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        out: Run = {}
        bs = self.config.batch_size
        for qid, docs in candidates.items():
            texts = [self.corpus[d].full_text[: self.config.max_doc_chars] for d in docs]
            batches = [(queries[qid].text, texts[start:start + bs]) for start in range(0, len(texts), bs)]
            scores = [s for batch in self.http.map(lambda qb: self._post(*qb), batches) for s in batch]
            out[qid] = dict(zip(docs, scores, strict=True))
        return out


def remote_source(name: str, corpus: Mapping[str, Document], config: Any, client: Any = None) -> TeacherSource:
    """The ``endpoint`` or ``openai`` source of a label config (its ``endpoint_*`` and ``openai_score`` fields):
    both reach their server through the same :class:`EndpointConfig`, retries and answer checks."""
    http = EndpointConfig(url=config.endpoint_url or "", model=config.endpoint_model, api_key=config.endpoint_api_key,
                          batch_size=config.endpoint_batch_size, timeout_s=config.endpoint_timeout_s,
                          retries=config.endpoint_retries, format=config.endpoint_format,
                          concurrency=config.endpoint_concurrency, max_wait_s=config.endpoint_max_wait_s)
    if name == "endpoint":
        return EndpointSource(corpus, http, client)
    if name == "openai":
        from distill.teacher.openai_source import OpenAISource

        return OpenAISource(corpus, http, config.openai_score, client=client)
    raise ValueError(f"{name!r} is not a remote source (endpoint, openai)")


LLMScore = Literal["head", "qlm"]


class LLMSource:
    """The decoder teacher: ``head`` reads the SFT score head; ``qlm`` the query log-likelihood (any causal LM dir)."""

    name = "llm"

    def __init__(self, corpus: Mapping[str, Document], model_dir: str | Path, score: LLMScore = "head",
                 batch_size: int = 8, max_length: int = 192, device: str = "auto"):
        self.corpus = corpus
        if score == "head":
            from distill.teacher.decoder_ranker import TeacherScorer

            self.scorer: Any = TeacherScorer(model_dir, batch_size=batch_size, max_length=max_length, device=device)
        elif score == "qlm":
            from distill.teacher.qlm import QueryLikelihoodScorer

            self.scorer = QueryLikelihoodScorer(model_dir, batch_size=batch_size, max_length=max_length, device=device)
        else:
            raise ConfigError(f"llm score must be 'head' or 'qlm', got {score!r}")

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        out: Run = {}
        for qid, docs in candidates.items():
            triples = [(queries[qid].text, self.corpus[d].title, self.corpus[d].text) for d in docs]
            out[qid] = dict(zip(docs, self.scorer.score_triples(triples), strict=True))
        return out


@dataclass
class EnsembleSource:
    """Per-query z-score of each member, weighted sum. Members with weight 0 are never called."""

    members: dict[str, TeacherSource]
    weights: dict[str, float] = field(default_factory=dict)
    name: str = "ensemble"

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("an ensemble needs at least one member source")
        if not self.weights:
            self.weights = dict.fromkeys(self.members, 1.0 / len(self.members))
        unknown = set(self.weights) - set(self.members)
        if unknown:
            raise ConfigError(f"ensemble weights name sources that are not members: {sorted(unknown)}")
        if any(w < 0 or not math.isfinite(w) for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ConfigError(f"ensemble weights must be >= 0 and not all 0, got {self.weights}")

    def member_runs(self, queries: Mapping[str, Query], candidates: Candidates,
                    only_weighted: bool = True) -> dict[str, Run]:
        return {name: src.score(queries, candidates) for name, src in self.members.items()
                if not only_weighted or self.weights.get(name, 0.0) > 0}

    def combine(self, runs: Mapping[str, Run]) -> Run:
        return combine_runs(runs, self.weights)

    def score(self, queries: Mapping[str, Query], candidates: Candidates) -> Run:
        return self.combine(self.member_runs(queries, candidates))


def combine_runs(runs: Mapping[str, Run], weights: Mapping[str, float]) -> Run:
    """Σ_s w_s · zscore_s over the candidates every weighted member scored (the first member's candidates)."""
    active = [s for s in runs if weights.get(s, 0.0) > 0]
    if not active:
        raise ConfigError(f"no member with a positive weight among {sorted(runs)} (weights {dict(weights)})")
    z = {s: zscore_run(runs[s]) for s in active}
    first = z[active[0]]
    return {qid: {d: sum(weights[s] * z[s][qid][d] for s in active) for d in docs} for qid, docs in first.items()}


def scored_qids(runs: Mapping[str, Run], qrels: Qrels, purpose: str) -> list[str]:
    """The queries of ``qrels`` that every member scored (a DataError naming ``purpose`` when there are none)."""
    qids = [q for q in qrels if all(r.get(q) for r in runs.values())]
    if not qids:
        raise DataError(f"no dev query has both qrels and scores from every ensemble member; cannot {purpose}")
    return qids


#: members that cost a model call per labelled pair: they must earn their weight beyond dev noise
SLOW_SOURCES = frozenset({"llm", "endpoint", "openai"})


def fit_weights(runs: Mapping[str, Run], qrels: Qrels, metric: str = "ndcg@10", rounds: int = 3,
                grid: Sequence[float] = tuple(i / 10 for i in range(11)), seed: int = 13,
                min_gain: float = 0.005,
                slow: Collection[str] = SLOW_SOURCES) -> tuple[dict[str, float], dict[str, float]]:
    """Coordinate ascent on ``metric`` over the queries of ``qrels``: (weights summing to 1, each member alone).

    Starts from the best single member; each round tries every grid value for each member in a seeded
    order and keeps a change only when it improves the metric (ties keep the simpler, earlier weights).
    Then each member is dropped whose removal costs less than ``min_gain`` (absolute, 0.005 = half a
    point). A ``slow`` member (the LLM, an endpoint) must also add more than two standard errors of the
    per-query differences: a weight that dev noise alone can explain (30 fit queries are noisy) is not worth
    running a slow teacher over every labelled pair for. Cheap members (BM25, dense, a run file) are not held
    to that test: dropping one saves nothing, and with 50 fit queries it dropped a dense member that added
    3.4 points (2 SE = 6.1), leaving BM25 alone as the teacher of a BM25 reranker.
    """
    from distill.core.evaluation import evaluate

    qids = scored_qids(runs, qrels, "fit weights")
    dev_qrels = {q: qrels[q] for q in qids}
    sub = {s: {q: r[q] for q in qids} for s, r in runs.items()}

    def per_query(w: Mapping[str, float]) -> dict[str, float]:
        res = evaluate(dev_qrels, combine_runs(sub, w), [metric])
        return {q: v[metric] for q, v in res.per_query.items()}

    def value(w: Mapping[str, float]) -> float:
        if sum(w.values()) <= 0:
            return -1.0
        return evaluate(dev_qrels, combine_runs(sub, w), [metric]).metrics[metric]

    alone = {s: value({t: float(t == s) for t in runs}) for s in runs}
    best_src = max(alone, key=lambda s: (alone[s], s))
    weights = {s: float(s == best_src) for s in runs}
    best = alone[best_src]
    order = list(runs)
    rng = random.Random(seed)
    for _ in range(rounds):
        improved = False
        rng.shuffle(order)
        for s in order:
            for g in grid:
                trial = {**weights, s: g}
                v = value(trial)
                if v > best + 1e-9:
                    best, weights, improved = v, trial, True
        if not improved:
            break
    for s in sorted(runs, key=lambda m: weights[m]):
        if weights[s] > 0 and sum(w > 0 for w in weights.values()) > 1:
            without = {**weights, s: 0.0}
            with_q, without_q = per_query(weights), per_query(without)
            diffs = np.array([with_q[q] - without_q[q] for q in with_q])
            gain = float(diffs.mean())
            se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else float("inf")
            need = max(min_gain, 2 * se) if s in slow else min_gain
            if gain < need:
                logger.info("ensemble: dropping %s (it adds %.4f %s on %d dev queries; needs >= %.4f%s)", s, gain,
                            metric, len(diffs), need, ", half a point and 2 standard errors" if s in slow else "")
                weights, best = without, value(without)
    total = sum(weights.values())
    weights = {s: round(w / total, 4) for s, w in weights.items()}
    logger.info("ensemble weights %s: dev %s %.4f on %d queries (alone: %s)", weights, metric, best, len(qids),
                {s: round(v, 4) for s, v in alone.items()})
    return weights, alone
