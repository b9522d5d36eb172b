"""Rescore query bodies and client-side rescoring with the plugin's exact semantics.

Combination arithmetic (OpenSearch ``QueryRescorer``, float32 like the JVM): a window hit scores
``mode(first * query_weight, ranker * rescore_query_weight)``; hits beyond the window score
``first * query_weight``; then everything is sorted by score descending (ties keep first-stage order).
The ranker sees each document as its ``fields`` values from _source joined with ". " (= Document.full_text).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from distill.core.errors import ConfigError

logger = logging.getLogger(__name__)

ScoreMode = Literal["total", "multiply", "avg", "max", "min"]
SCORE_MODES: tuple[str, ...] = ("total", "multiply", "avg", "max", "min")


@dataclass(frozen=True, slots=True)
class RescoreParams:
    """The ``distilrank`` rescore clause. ``window_size`` hits per shard are sent to the ranker."""

    window_size: int = 50
    fields: tuple[str, ...] = ("title", "text")
    query_weight: float = 1.0
    rescore_query_weight: float = 1.0
    score_mode: ScoreMode = "total"

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ConfigError(f"window_size must be >= 1, got {self.window_size}")
        if not self.fields:
            raise ConfigError("fields must name at least one _source field, e.g. ('title', 'text')")
        if self.score_mode not in SCORE_MODES:
            raise ConfigError(f"score_mode must be one of {', '.join(SCORE_MODES)}, got {self.score_mode!r}")


def rescore_clause(query_text: str, params: RescoreParams) -> dict[str, object]:
    """The ``rescore`` element of a search body for the plugin."""
    return {
        "window_size": params.window_size,
        "distilrank": {
            "query_text": query_text,
            "fields": list(params.fields),
            "query_weight": params.query_weight,
            "rescore_query_weight": params.rescore_query_weight,
            "score_mode": params.score_mode,
        },
    }


def match_query(query_text: str, fields: Sequence[str] = ("title", "text")) -> dict[str, object]:
    """BM25 first stage: ``multi_match`` (most_fields) over ``fields``."""
    return {"multi_match": {"query": query_text, "fields": list(fields), "type": "most_fields"}}


def search_body(query_text: str, size: int = 10, params: RescoreParams | None = None,
                fields: Sequence[str] = ("title", "text"), from_: int = 0) -> dict[str, object]:
    body: dict[str, object] = {"query": match_query(query_text, fields), "size": size, "from": from_,
                               "_source": list(fields)}
    if params is not None:
        body["rescore"] = rescore_clause(query_text, params)
    return body


def document_text(source: Mapping[str, object], fields: Sequence[str]) -> str:
    """Same string the plugin builds: non-empty values of ``fields`` (dotted paths, lists flattened) joined by ". "."""
    parts: list[str] = []

    def add(value: object) -> None:
        if value is None:
            return
        if isinstance(value, list):
            for v in value:
                add(v)
            return
        s = value if isinstance(value, str) else str(value)
        if s:
            parts.append(s)

    for field in fields:
        value: object = source
        for key in field.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        add(value)
    return ". ".join(parts)


def combine(first: np.ndarray, ranker: np.ndarray | None, params: RescoreParams) -> np.ndarray:
    """Final scores for hits in first-stage order. ``ranker`` covers the first ``len(ranker)`` hits (the window)."""
    first32 = np.asarray(first, dtype=np.float32)
    out = first32 * np.float32(params.query_weight)
    if ranker is None:
        return out
    n = len(ranker)
    p = out[:n]
    s = np.asarray(ranker, dtype=np.float32) * np.float32(params.rescore_query_weight)
    mode = params.score_mode
    if mode == "total":
        c = p + s
    elif mode == "multiply":
        c = p * s
    elif mode == "avg":
        c = (p + s) / np.float32(2)
    elif mode == "max":
        c = np.maximum(p, s)
    else:
        c = np.minimum(p, s)
    out[:n] = c
    return out


def rescore_hits(hits: Sequence[Mapping[str, object]], query_text: str, params: RescoreParams,
                 score_fn) -> list[tuple[str, float]]:
    """Client-side rescoring of first-stage ``hits`` (OpenSearch hit dicts with _id, _score, _source).

    ``score_fn(query, documents) -> list[float]`` returns one ranker score per document in input order.
    Fails open like the plugin: any exception from ``score_fn`` keeps first-stage order and scores.
    """
    window = list(hits[: params.window_size])
    first = np.array([float(h["_score"]) for h in hits], dtype=np.float32)
    try:
        texts = [document_text(h.get("_source") or {}, params.fields) for h in window]  # type: ignore[arg-type]
        ranker = np.asarray(score_fn(query_text, texts), dtype=np.float32) if window else None
        if ranker is not None and ranker.shape != (len(window),):
            raise ValueError(f"ranker returned {ranker.shape} scores for {len(window)} documents")
    except Exception as exc:  # noqa: BLE001 - fail open is the contract, the error is logged
        logger.warning("client-side rescore failed open: %s", exc)
        return [(str(h["_id"]), float(f)) for h, f in zip(hits, first, strict=True)]
    scores = combine(first, ranker, params)
    order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
    return [(str(hits[i]["_id"]), float(scores[i])) for i in order]


def ranker_score_fn(base_url: str, timeout: float = 10.0):
    """A ``score_fn`` backed by ``ranker.client.RerankClient`` (one POST /v1/rerank per query)."""
    from ranker.client import RerankClient

    client = RerankClient(base_url, timeout=timeout)

    def score(query: str, documents: Sequence[str]) -> list[float]:
        response = client.rerank(query, list(documents))
        scores = [float("nan")] * len(documents)
        for r in response.results:
            scores[r.index] = r.relevance_score
        if len(response.results) != len(documents) or any(s != s for s in scores):
            raise ValueError(f"ranker returned {len(response.results)} results for {len(documents)} documents")
        return scores

    score.close = client.close  # type: ignore[attr-defined]
    return score
