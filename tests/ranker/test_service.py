"""RerankService without HTTP: scoring, cache, limits, deadlines, readiness, draining and error mapping.

A stand-in model (score = number of characters of the document) makes every answer predictable; nothing here
starts a server or loads ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from distill.core.cross_encoder import TokenCaps
from distill.core.model_card import ModelCard
from ranker.batcher import (
    DeadlineExceededError,
    OverloadedError,
    QueueFullError,
    ScoringError,
    ShuttingDownError,
)
from ranker.config import ServerConfig
from ranker.protocol import ApiError, RerankRequest, TEIRerankRequest
from ranker.service import MAX_DEADLINE_MS, RerankService, http_error, validation_error


class LengthModel:
    """logit = len(doc) / 10 - 1 (NaN for a document that says so); records the pairs of every call."""

    card = ModelCard(onnx_file="model.onnx", precision="fp32", token_caps=TokenCaps(128, max_query_tokens=None),
                     name="length-model", decision="stand-in")
    model_sha256 = "0" * 64
    card_sha256 = "1" * 64
    max_seq_len = 128
    providers = ["CPUExecutionProvider"]
    name = "length-model"

    def __init__(self) -> None:
        self.warmed = False
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def warmup(self) -> None:
        self.warmed = True

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        self.gate.wait(10)
        self.calls.append(len(docs))
        return np.array([math.nan if d == "nan" else len(d) / 10 - 1 for d in docs], dtype=np.float32)


def _run(service: RerankService, coro_factory):  # noqa: ANN001, ANN202
    """Start the service, run one coroutine against it, stop it (as the app's lifespan does)."""
    async def main():  # noqa: ANN202
        service.start()
        try:
            return await coro_factory()
        finally:
            await service.stop()

    return asyncio.run(main())


def _service(**config: object) -> RerankService:
    return RerankService(LengthModel(), ServerConfig(scores="raw", **config))  # type: ignore[arg-type]


def test_rerank_orders_by_score_and_honours_top_n_and_return_documents():
    service = _service()
    body = RerankRequest(query="q", documents=["ab", "abcdef", {"text": "abcd", "id": 7}], top_n=2,
                         return_documents=True)
    resp = _run(service, lambda: service.rerank(body))
    assert [r.index for r in resp.results] == [1, 2]
    assert [r.relevance_score for r in resp.results] == pytest.approx([-0.4, -0.6])
    assert [r.document.text for r in resp.results] == ["abcdef", "abcd"]  # type: ignore[union-attr]
    assert resp.meta.score == "raw_logit" and resp.meta.model == "length-model" and resp.meta.cached == 0
    assert service.runtime.warmed  # type: ignore[attr-defined]


def test_tei_sigmoid_unless_raw_scores():
    service = _service()
    sig = _run(service, lambda: service.rerank_tei(TEIRerankRequest(query="q", texts=["a" * 10, "a"])))
    assert [r.index for r in sig] == [0, 1] and sig[0].score == pytest.approx(0.5)
    service = _service()
    raw = _run(service, lambda: service.rerank_tei(TEIRerankRequest(query="q", texts=["a" * 10], raw_scores=True,
                                                                     return_text=True)))
    assert raw[0].score == pytest.approx(0.0) and raw[0].text == "a" * 10


def test_cache_serves_repeats_without_scoring():
    service = _service(cache_size=10)

    async def twice():  # noqa: ANN202
        first = await service.rerank(RerankRequest(query="q", documents=["ab", "cd"]))
        second = await service.rerank(RerankRequest(query="q", documents=["ab", "cd", "ef"]))
        return first, second

    first, second = _run(service, twice)
    assert first.meta.cached == 0 and second.meta.cached == 2
    assert service.runtime.calls == [2, 1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("texts", "query", "etype", "match"), [
    (["a"] * 4, "q", "too_many_documents", "4 documents > max_docs=3"),
    (["a", "x" * 11], "q", "text_too_long", "document 1 has 11 characters > max_chars=10"),
    (["a"], "q" * 11, "text_too_long", "query has 11 characters"),
])
def test_limits_are_413(texts, query, etype, match):
    service = _service(max_docs=3, max_queue=3, max_chars=10)
    with pytest.raises(ApiError, match=match) as info:
        _run(service, lambda: service.logits(query, texts, None))
    assert info.value.status == 413 and info.value.type == etype


def test_not_ready_before_start_and_shutting_down_when_draining():
    service = _service()
    with pytest.raises(ApiError, match="loading") as info:
        asyncio.run(service.logits("q", ["a"], None))
    assert info.value.status == 503 and info.value.type == "not_ready" and info.value.headers["Retry-After"] == "1"
    assert service.readiness()[0] == 503

    async def drained():  # noqa: ANN202
        assert service.readiness()[0] == 200
        service.begin_drain()
        assert service.readiness()[1].reason == "draining for shutdown"
        return await service.logits("q", ["a"], None)

    with pytest.raises(ApiError, match="stopping") as info:
        _run(service, drained)
    assert info.value.status == 503 and info.value.type == "shutting_down"


def test_a_non_finite_score_is_a_500_and_never_cached():
    service = _service(cache_size=10)

    async def nan_twice():  # noqa: ANN202
        for _ in range(2):
            with pytest.raises(ApiError, match=r"NaN or infinity for 1 of 2 pair") as info:
                await service.rerank(RerankRequest(query="q", documents=["fine", "nan"]))
            assert info.value.status == 500 and info.value.type == "scoring_failed"
        return await service.rerank(RerankRequest(query="q", documents=["fine"]))

    ok = _run(service, nan_twice)
    assert ok.meta.cached == 0  # the finite score of a failed request was not cached either
    assert len(service.cache or []) == 1


def test_deadline_header():
    service = _service(default_deadline_ms=500)
    assert service.deadline(None, 100.0) == pytest.approx(100.5)
    assert service.deadline("250", 100.0) == pytest.approx(100.25)
    assert _service().deadline(None, 100.0) is None
    for bad in ("soon", "0", "-5", "nan", "inf", "1e308", "\uff11\uff10", str(MAX_DEADLINE_MS * 2), "9" * 5000):
        with pytest.raises(ApiError, match="give a positive number of milliseconds") as info:
            service.deadline(bad, 0.0)
        assert info.value.status == 400 and len(info.value.message) < 300


@pytest.mark.parametrize(("exc", "status", "etype", "retry"), [
    (QueueFullError(10, 2.2, 3), 503, "queue_full", "3"),
    (OverloadedError(2.0, 0.5, retry_after_s=0.01), 503, "overloaded", "1"),
    (DeadlineExceededError("late"), 504, "deadline_exceeded", None),
    (ShuttingDownError("bye"), 503, "shutting_down", "1"),
    (ScoringError("boom"), 500, "scoring_failed", None),
])
def test_batcher_errors_map_to_http(exc, status, etype, retry):
    err = RerankService.api_error(exc)
    assert (err.status, err.type, err.headers.get("Retry-After")) == (status, etype, retry)


def test_unexpected_errors_are_not_mapped():
    with pytest.raises(KeyError):
        RerankService.api_error(KeyError("a bug"))


def test_validation_errors_name_fields_and_never_echo_a_long_one():
    long_name = "k" * 200_000
    err = validation_error([{"type": "extra_forbidden", "loc": ("body", long_name), "msg": "Extra inputs"},
                            {"type": "int_type", "loc": ("body", "top_n"), "msg": "Input should be a valid integer"}])
    assert err.status == 422 and len(err.message) < 400
    assert err.message.startswith("k" * 64 + "... (200000 characters): unknown field")
    assert "top_n: Input should be a valid integer" in err.message
    assert validation_error([{"type": "json_invalid", "loc": ("body", 3), "msg": "x"}]).status == 400


def test_framework_errors_in_the_error_schema():
    err = http_error(405, "DELETE", "/health", "Method Not Allowed", {"Allow": "GET"})
    assert (err.status, err.type, err.headers) == (405, "method_not_allowed", {"Allow": "GET"})
    assert "DELETE is not allowed on /health" in err.message
    long = http_error(404, "GET", "/" + "p" * 10_000, "Not Found")
    assert long.type == "not_found" and len(long.message) < 200


def test_info_reports_the_served_model_and_limits():
    service = _service(max_docs=7, max_queue=7)
    info = service.info()
    assert info.model == "length-model" and info.score == "raw_logit" and info.max_seq_len == 128
    assert info.limits["max_docs"] == 7 and info.limits["max_text_bytes"] == 12 * 20_000 + 1024
    assert info.interpolation is None and info.sessions == 1


def test_stop_finishes_queued_work():
    service = _service()
    model: LengthModel = service.runtime  # type: ignore[assignment]

    async def main():  # noqa: ANN202
        service.start()
        model.gate.clear()  # the worker holds the first batch until released
        task = asyncio.create_task(service.logits("q", ["abc"], None))
        await asyncio.sleep(0.05)
        service.begin_drain()
        model.gate.set()
        scored = await task
        await service.stop()
        return scored

    scored = asyncio.run(main())
    assert scored.logits.tolist() == pytest.approx([-0.7])
