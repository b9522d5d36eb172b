"""Client-side rescoring semantics (no node needed): combination arithmetic, document text, fail open."""

from __future__ import annotations

import numpy as np
import pytest

from distill.core.formats import Document
from distill.core.errors import ConfigError
from opensearch_plugin import RescoreParams, combine, document_text, rescore_clause, rescore_hits

FIRST = np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)
RANKER = np.array([0.5, 2.0, 5.0], dtype=np.float32)


@pytest.mark.parametrize(("mode", "expected"), [
    ("total", [2.0 + 1.5, 1.5 + 6.0, 1.0 + 15.0, 0.5]),
    ("multiply", [2.0 * 1.5, 1.5 * 6.0, 1.0 * 15.0, 0.5]),
    ("avg", [(2.0 + 1.5) / 2, (1.5 + 6.0) / 2, (1.0 + 15.0) / 2, 0.5]),
    ("max", [2.0, 6.0, 15.0, 0.5]),
    ("min", [1.5, 1.5, 1.0, 0.5]),
])
def test_combine_matches_query_rescorer(mode: str, expected: list[float]) -> None:
    params = RescoreParams(window_size=3, query_weight=0.5, rescore_query_weight=3.0, score_mode=mode)  # type: ignore[arg-type]
    assert combine(FIRST, RANKER, params).tolist() == pytest.approx(expected)


def test_document_text_matches_full_text() -> None:
    doc = Document("d1", "A title", "Body text.")
    assert document_text({"title": doc.title, "text": doc.text}, ["title", "text"]) == doc.full_text
    assert document_text({"title": "", "text": "only"}, ["title", "text"]) == "only"
    assert document_text({"meta": {"tags": ["a", "b"]}}, ["meta.tags", "missing"]) == "a. b"


def test_rescore_hits_orders_window_and_scales_the_rest() -> None:
    hits = [{"_id": f"d{i}", "_score": float(s), "_source": {"text": f"doc {i}"}} for i, s in enumerate(FIRST)]
    params = RescoreParams(window_size=3, query_weight=0.5, rescore_query_weight=3.0)
    ranked = rescore_hits(hits, "q", params, lambda q, docs: RANKER.tolist())
    assert [d for d, _ in ranked] == ["d2", "d1", "d0", "d3"]
    assert ranked[-1][1] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [RuntimeError("down"), [1.0]])
def test_rescore_hits_fails_open(bad: object) -> None:
    hits = [{"_id": f"d{i}", "_score": float(s), "_source": {"text": "x"}} for i, s in enumerate(FIRST)]

    def score_fn(q: str, docs: list[str]) -> list[float]:
        if isinstance(bad, Exception):
            raise bad
        return bad  # type: ignore[return-value]

    ranked = rescore_hits(hits, "q", RescoreParams(window_size=3), score_fn)
    assert ranked == [(h["_id"], h["_score"]) for h in hits]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window_size": 0}, "window_size must be >= 1"),
    ({"fields": ()}, "fields must name at least one"),
    ({"score_mode": "sum"}, "score_mode must be one of"),
])
def test_params_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RescoreParams(**kwargs)  # type: ignore[arg-type]


def test_rescore_clause_shape() -> None:
    clause = rescore_clause("q", RescoreParams(window_size=7, score_mode="max"))
    assert clause == {"window_size": 7, "distilrank": {"query_text": "q", "fields": ["title", "text"], "query_weight": 1.0,
                                                       "rescore_query_weight": 1.0, "score_mode": "max"}}
