"""The rerank API matrix: the endpoint source against a stand-in of each server, answering as documented
(Cohere v1 and v2, Jina, vLLM /v1/rerank and /score, TEI /rerank, Infinity), and the one answer checker."""

from __future__ import annotations

import math

import pytest

from distill.core.errors import ConfigError
from distill.core.formats import Document, Query
from distill.teacher._endpoint import EndpointConfig, read_rerank, retry_after_s, scores_by_index
from distill.teacher.sources import EndpointSource
from tests.distill.teacher.stand_ins import MODEL, RERANK_FLAVOURS, rerank_score, serve

QUERY = "cancer cell apoptosis pathway"
TEXTS = ["apoptosis in cancer cell lines", "a pathway of cell death", "weather report", "cancer",
         "cell apoptosis pathway cancer study", "unrelated words here", "apoptosis"]
CORPUS = {f"d{i}": Document(f"d{i}", "", t) for i, t in enumerate(TEXTS)}


def _label(url: str, **kw: object) -> dict[str, float]:
    cfg = EndpointConfig(url=url, batch_size=3, retries=1, backoff_s=0.0, timeout_s=5.0, concurrency=2,
                         **kw)  # type: ignore[arg-type]
    return EndpointSource(CORPUS, cfg).score({"q": Query("q", QUERY)}, {"q": list(CORPUS)})["q"]


@pytest.mark.parametrize("flavour", RERANK_FLAVOURS)
def test_each_rerank_server_shape_is_read_by_index(flavour: str) -> None:
    """7 documents in batches of 3, 2 in flight; every server answers sorted by score (vLLM /score in input order):
    each label must be that document's own score. TEI is reached with format auto: its 422 for a body without
    ``texts`` switches the source to TEI's request shape."""
    model = MODEL if flavour == "cohere-v2" else None  # Cohere v2 requires a model
    with serve(flavour) as (url, handler):
        labels = _label(url, model=model)
    raw = flavour == "tei"  # TEI is asked for raw scores (logits), the others answer their documented default
    assert labels == pytest.approx({d: rerank_score(flavour, QUERY, doc.text, raw) for d, doc in CORPUS.items()})
    bodies = [r["body"] for r in handler.requests]
    if flavour == "tei":
        refused = [b for b in bodies if "texts" not in b]  # a refusal per request in flight, then TEI's shape
        assert 1 <= len(refused) <= 2 and len(bodies) - len(refused) == 3
    elif flavour == "vllm-score":
        assert all(b["text_1"] == QUERY and len(b["text_2"]) <= 3 for b in bodies)
    else:
        assert all(b["top_n"] == len(b["documents"]) for b in bodies)
    if flavour == "cohere-v2":
        assert all("return_documents" not in b for b in bodies)  # v2 has no such field


def test_an_explicit_format_skips_detection() -> None:
    with serve("tei") as (url, handler):
        labels = _label(url, format="tei")
    assert all("texts" in r["body"] for r in handler.requests) and len(handler.requests) == 3
    assert labels["d4"] > labels["d2"]


def test_read_rerank_accepts_every_documented_shape_and_legacy_infinity() -> None:
    assert read_rerank([{"index": 1, "score": 0.2}, {"index": 0, "score": 0.9, "text": "x"}], 2) == ("tei", [0.9, 0.2])
    assert read_rerank({"results": [{"index": 0, "relevance_score": 1}], "meta": {}}, 1) == ("cohere", [1.0])
    assert read_rerank({"object": "list", "data": [{"index": 0, "object": "score", "score": -2.5}]}, 1) == \
        ("vllm-score", [-2.5])
    assert read_rerank({"object": "rerank", "data": [{"index": 0, "relevance_score": 0.5}]}, 1) == ("cohere", [0.5])
    with pytest.raises(ValueError, match="neither a 'results' list"):
        read_rerank({"scores": [1.0]}, 1)


@pytest.mark.parametrize(("items", "match"), [
    ([(0, 1.0), (0, 2.0)], "result index 0 appears twice"),
    ([(0, 1.0), (1, 1.0), (2, 1.0)], r"result index 2 is out of range: the request had 2 item\(s\)"),
    ([(0, 1.0)], r"1 scores for 2 items \(missing indexes \[1\]\)"),
    ([(0, 1.0), ("1", 1.0)], "result index '1' is not an integer"),
    ([(0, 1.0), (True, 1.0)], "result index True is not an integer"),
    ([(0, 1.0), (1, float("nan"))], "the score of index 1 is nan"),
    ([(0, 1.0), (1, None)], "the score of index 1 is None"),
])
def test_the_answer_checker_refuses_duplicate_extra_and_missing_indexes(items: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        scores_by_index(items, 2)
    assert scores_by_index([(1, 2), (0, 0.5)], 2) == [0.5, 2.0]


def test_retry_after_forms_and_absurd_values() -> None:
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "1.5"}) == 1.5
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "99999999999999"}) == 99999999999999.0  # capped by the client, not here
    assert retry_after_s({"retry-after": "9" * 400}) == math.inf
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=2e9) == 0.0
    for junk in ("soon", "-5", "Wed, 99 Foo 99999 99:99:99 GMT", ""):
        assert retry_after_s({"retry-after": junk}) is None


@pytest.mark.parametrize(("kw", "match"), [
    ({"url": "http://"}, "has no host"),
    ({"url": "https://:8080/v1/rerank"}, "has no host"),
    ({"url": "http://127.0.0.1:99999/x"}, "not a valid URL|bad port"),
    ({"url": "localhost:8080"}, "must start with http"),
    ({"url": "http://x", "format": "soap"}, "format must be one of"),
    ({"url": "http://x", "timeout_s": float("nan")}, "timeout_s must be a finite number"),
    ({"url": "http://x", "max_wait_s": float("inf")}, "max_wait_s must be a finite number"),
    ({"url": "http://x", "retries": 1.5}, "retries must be an integer"),
    ({"url": "http://x", "concurrency": 0}, "concurrency must be a finite number in"),
    ({"url": "http://x", "api_key": " k"}, "surrounding spaces"),
    ({"url": "http://x", "api_key": "kéy€"}, "printable ASCII"),
])
def test_endpoint_config_refuses_what_no_request_could_carry(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EndpointConfig(**kw)
