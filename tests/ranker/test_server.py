"""The rerank service against a real uvicorn server on 127.0.0.1: contract, errors, concurrency,
overload, deadlines, auth, cache, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import httpx
import numpy as np
import pytest

from ranker.client import AsyncRerankClient, RerankClient, RerankClientError, RetryPolicy
from ranker.runtime import sigmoid
from ranker.server import ServerConfig, create_app
from tests.ranker_fixtures import SlowRuntime, running_server

pytestmark = pytest.mark.integration

DOCS = ["Mitochondria produce ATP for the cell.", "The stock market fell today.",
        "Cells divide by mitosis " * 30, "ATP synthase is a membrane protein.", "Penguins live in Antarctica."]


@pytest.fixture(scope="module")
def server(ranker_runtime):
    app = create_app(ranker_runtime, ServerConfig(max_docs=50, max_chars=2000, max_queue=200, cache_size=0))
    with running_server(app) as url:
        yield url


def expected(runtime, query, docs):
    return sigmoid(runtime.score(query, docs))


def test_cohere_contract(server, ranker_runtime):
    r = httpx.post(f"{server}/v1/rerank", json={"query": "what makes ATP", "documents": DOCS, "model": "any"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "results", "meta"} and body["id"]
    assert body["meta"]["score"] == "sigmoid" and body["meta"]["api_version"] == {"version": "2"}
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    assert all(isinstance(x["relevance_score"], float) and "document" not in x for x in results)
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    want = expected(ranker_runtime, "what makes ATP", DOCS)
    np.testing.assert_allclose([want[x["index"]] for x in results], scores, rtol=1e-5, atol=1e-6)


def test_cohere_top_n_object_documents_and_return_documents(server):
    docs = [{"text": d, "id": f"doc{i}", "meta": {"k": 1}} for i, d in enumerate(DOCS)]
    r = httpx.post(f"{server}/v1/rerank",
                   json={"query": "ATP", "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    assert all(x["document"] == {"text": DOCS[x["index"]]} for x in results)
    full = httpx.post(f"{server}/v1/rerank", json={"query": "ATP", "documents": DOCS}).json()["results"]
    assert [x["index"] for x in results] == [x["index"] for x in full[:2]]


def test_tei_contract(server, ranker_runtime):
    r = httpx.post(f"{server}/rerank", json={"query": "what makes ATP", "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    items = r.json()
    assert isinstance(items, list) and sorted(x["index"] for x in items) == list(range(len(DOCS)))
    assert all(x["text"] == DOCS[x["index"]] for x in items)
    want = expected(ranker_runtime, "what makes ATP", DOCS)
    np.testing.assert_allclose([x["score"] for x in items], [want[x["index"]] for x in items], rtol=1e-5, atol=1e-6)
    raw = httpx.post(f"{server}/rerank", json={"query": "what makes ATP", "texts": DOCS, "raw_scores": True}).json()
    logits = ranker_runtime.score("what makes ATP", DOCS)
    np.testing.assert_allclose([x["score"] for x in raw], [logits[x["index"]] for x in raw], rtol=1e-4, atol=1e-4)
    assert "text" not in raw[0]


def test_ops_endpoints(server, ranker_runtime):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server}/ready").json()["ready"] is True
    info = httpx.get(f"{server}/info").json()
    assert info["model_sha256"] == ranker_runtime.model_sha256 and info["max_seq_len"] == 128
    assert info["precision"] == "fp32" and info["limits"]["max_docs"] == 50 and info["limits"]["auth"] is False
    httpx.post(f"{server}/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
    httpx.post(f"{server}/v1/rerank", json={"query": "", "documents": ["a"]})
    text = httpx.get(f"{server}/metrics").text
    for name in ("distilrank_request_latency_seconds_bucket", "distilrank_batch_size_pairs_bucket",
                 "distilrank_queue_depth_pairs", "distilrank_errors_total", "distilrank_cache_hit_ratio"):
        assert name in text, name
    assert 'distilrank_errors_total{type="invalid_request"}' in text
    assert 'distilrank_requests_total{endpoint="/v1/rerank",status="200"}' in text


def test_openapi_matches_server(server):
    spec = httpx.get(f"{server}/openapi.json").json()
    paths = spec["paths"]
    for path, method in [("/v1/rerank", "post"), ("/rerank", "post"), ("/health", "get"), ("/ready", "get"),
                         ("/info", "get"), ("/metrics", "get")]:
        assert method in paths[path], path
    schemas = spec["components"]["schemas"]
    assert {"query", "documents", "top_n", "return_documents"} <= set(schemas["RerankRequest"]["properties"])
    assert set(schemas["RerankRequest"]["required"]) == {"query", "documents"}
    assert {"index", "relevance_score", "document"} <= set(schemas["RerankResult"]["properties"])
    assert {"id", "results", "meta"} <= set(schemas["RerankResponse"]["properties"])
    assert {"query", "texts"} <= set(schemas["TEIRerankRequest"]["properties"])
    for code in ("400", "413", "422", "503", "504"):
        assert code in paths["/v1/rerank"]["post"]["responses"], code
    # every field the server actually returns is documented
    body = httpx.post(f"{server}/v1/rerank", json={"query": "q", "documents": ["a"], "return_documents": True}).json()
    assert set(body["results"][0]) <= set(schemas["RerankResult"]["properties"])


@pytest.mark.parametrize(("payload", "status", "etype", "match"), [
    ({"query": "", "documents": ["a"]}, 422, "invalid_request", "query is empty"),
    ({"query": "   ", "documents": ["a"]}, 422, "invalid_request", "query is empty"),
    ({"query": "q", "documents": []}, 422, "invalid_request", "documents"),
    ({"query": "q"}, 422, "invalid_request", "documents: Field required"),
    ({"query": "q", "documents": ["ok", ""]}, 422, "invalid_request", r"documents\[1\] is empty"),
    ({"query": "q", "documents": [1, 2]}, 422, "invalid_request", "documents"),
    ({"query": "q", "documents": [{"title": "no text"}]}, 422, "invalid_request", "text"),
    ({"query": "q", "documents": "just a string"}, 422, "invalid_request", "documents"),
    ({"query": "q", "documents": ["a"], "top_k": 3}, 422, "invalid_request", "top_k: unknown field"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "invalid_request", "top_n"),
    ({"query": "q", "documents": ["a"] * 51}, 413, "too_many_documents", r"more than 50 documents \(max_docs=50\)"),
    ({"query": "q", "documents": ["a", "x" * 2001]}, 413, "text_too_long", "document 1 has 2001 characters"),
    ({"query": "q" * 2001, "documents": ["a"]}, 413, "text_too_long", "query has 2001 characters"),
    # lone UTF-16 surrogates: rejected at the schema, naming the field, before they can reach a batch
    ({"query": "\ud800", "documents": ["x"]}, 422, "invalid_request", r"^query: .*lone surrogate U\+D800"),
    ({"query": "q", "documents": ["a", "b", "c", "x\udc00"]}, 422, "invalid_request",
     r"^documents\.3: .*invalid Unicode"),
    ({"query": "q", "documents": [{"text": "\udfff", "id": 1}]}, 422, "invalid_request",
     r"^documents\.0: .*invalid Unicode"),
])
def test_cohere_errors(server, payload, status, etype, match):
    import re

    # json.dumps writes a lone surrogate as the escape "\ud800", as the probe sent it
    r = httpx.post(f"{server}/v1/rerank", content=json.dumps(payload), headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == etype
    assert re.search(match, err["message"]), err["message"]


def test_bad_json_and_tei_errors(server):
    r = httpx.post(f"{server}/v1/rerank", content=b'{"query": "q", "documents": [',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json"
    assert "valid JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/rerank", json={"query": "q", "texts": ["a", " "]})
    assert r.status_code == 422 and "texts[1] is empty" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 422 and "texts: Field required" in r.json()["error"]["message"]
    r = httpx.post(f"{server}/v1/rerank", json={"query": "q", "documents": ["a"]},
                   headers={"X-Request-Timeout-Ms": "soon"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_header"
    r = httpx.post(f"{server}/rerank", content=b'{"query": "q", "texts": ["a", "\\ud800"]}',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("texts.1: ")
    r = httpx.post(f"{server}/v1/rerank", content=b'{"query": "q"', headers={"Content-Type": "application/json"})
    assert r.json() == {"error": {"type": "invalid_json", "message": r.json()["error"]["message"]}}
    for resp in (httpx.get(f"{server}/nope"), httpx.get(f"{server}/v1/rerank")):
        assert resp.status_code in (404, 405) and set(resp.json()["error"]) == {"type", "message"}, resp.text


def test_concurrent_clients_get_their_own_results(server, ranker_runtime):
    rng = np.random.default_rng(0)
    words = "cell protein gene ATP mitosis market penguin ice virus immune brain drug trial dose".split()
    requests = []
    for i in range(24):
        docs = [" ".join(rng.choice(words, size=rng.integers(1, 40))) for _ in range(rng.integers(1, 12))]
        requests.append((f"query {i} " + " ".join(rng.choice(words, 3)), docs))
    want = [sigmoid(ranker_runtime.score(q, d)) for q, d in requests]

    async def main() -> list:
        async with AsyncRerankClient(server, retry=RetryPolicy(retries=0)) as client:
            return await asyncio.gather(*(client.rerank(q, d) for q, d in requests))

    got = asyncio.run(main())
    for (_, docs), resp, w in zip(requests, got, want, strict=True):
        assert sorted(r.index for r in resp.results) == list(range(len(docs)))
        by_index = {r.index: r.relevance_score for r in resp.results}
        np.testing.assert_allclose([by_index[i] for i in range(len(docs))], w, rtol=1e-5, atol=1e-6)


def test_overload_gives_fast_503_then_recovers(ranker_runtime):
    slow = SlowRuntime(ranker_runtime, delay_s=0.4)
    app = create_app(slow, ServerConfig(max_batch_pairs=4, max_wait_ms=0, max_queue=8, max_docs=4))
    with running_server(app) as url:
        statuses: list[tuple[int, float, str | None]] = []
        lock = threading.Lock()

        def call() -> None:
            t0 = time.monotonic()
            r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]}, timeout=30)
            with lock:
                statuses.append((r.status_code, time.monotonic() - t0, r.headers.get("Retry-After")))

        threads = [threading.Thread(target=call) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        rejected = [s for s in statuses if s[0] == 503]
        ok = [s for s in statuses if s[0] == 200]
        assert len(statuses) == 10 and rejected and ok, statuses
        assert all(s[2] is not None and int(s[2]) >= 1 for s in rejected)
        assert max(s[1] for s in rejected) < min(s[1] for s in ok) + 0.4, "503s must come at once, not after queuing"
        # recovery: once the burst is over the same request succeeds, and the client's retry handles 503
        assert httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200
        assert 'distilrank_errors_total{type="queue_full"}' in httpx.get(f"{url}/metrics").text


def test_deadline_gives_504(ranker_runtime):
    slow = SlowRuntime(ranker_runtime, delay_s=0.5)
    app = create_app(slow, ServerConfig(max_wait_ms=0))
    with running_server(app) as url:
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]},
                       headers={"X-Request-Timeout-Ms": "100"}, timeout=10)
        assert r.status_code == 504 and r.json()["error"]["type"] == "deadline_exceeded"
        assert "X-Request-Timeout-Ms" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 0.45, "504 must come when the deadline passes, not after inference"
        r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]},
                       headers={"X-Request-Timeout-Ms": "5000"}, timeout=10)
        assert r.status_code == 200


def test_expected_wait_beyond_deadline_is_shed_at_admission(ranker_runtime):
    slow = SlowRuntime(ranker_runtime, delay_s=0.2)
    app = create_app(slow, ServerConfig(max_batch_pairs=4, max_wait_ms=0, max_docs=4, max_queue=100))
    with running_server(app) as url:
        body = {"query": "q", "documents": ["a", "b", "c", "d"]}
        assert httpx.post(f"{url}/v1/rerank", json=body).status_code == 200  # measures ~20 pairs/s
        backlog = [threading.Thread(target=httpx.post, args=(f"{url}/v1/rerank",),
                                    kwargs={"json": body, "timeout": 30})
                   for _ in range(6)]
        for t in backlog:
            t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/rerank", json=body, headers={"X-Request-Timeout-Ms": "500"}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded", r.text
        assert time.monotonic() - t0 < 0.3, "the rejection must come at admission, not after queuing"
        assert int(r.headers["Retry-After"]) >= 1
        for t in backlog:
            t.join(30)
        text = httpx.get(f"{url}/metrics").text
        assert 'distilrank_errors_total{type="overloaded"} 1.0' in text
        assert "distilrank_service_rate_pairs_per_second" in text and "distilrank_queue_depth_requests" in text


def test_graceful_timeout_answers_and_logs_dropped_requests(ranker_runtime, caplog):
    from ranker.process import free_port, wait_ready
    from ranker.server import make_server

    slow = SlowRuntime(ranker_runtime, delay_s=3.0)
    app = create_app(slow, ServerConfig(max_wait_ms=0, graceful_timeout_s=0.5))
    port = free_port()
    server = make_server(app, port=port)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    result: dict[str, object] = {}
    with caplog.at_level(logging.INFO):
        thread.start()
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=30)

        def call() -> None:
            r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
            result["status"], result["body"] = r.status_code, r.json()

        client = threading.Thread(target=call)
        client.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        server.should_exit = True
        client.join(10)
        assert time.monotonic() - t0 < 2.5, "the graceful timeout (0.5 s) must bound the drain"
        thread.join(10)
    assert result.get("status") == 503 and result["body"]["error"]["type"] == "shutting_down", result
    log = caplog.text
    assert "1 request(s) were still in flight when the 0.5 s graceful timeout hit and were dropped" in log, log
    assert "queued requests were finished" not in log


def test_unhandled_error_is_a_counted_json_500(ranker_runtime):
    class BrokenInfo(SlowRuntime):
        @property
        def providers(self):
            raise KeyError("providers")  # a bug: /info cannot be built

    app = create_app(BrokenInfo(ranker_runtime, 0.0), ServerConfig())
    with running_server(app) as url:
        r = httpx.get(f"{url}/info")
        assert r.status_code == 500 and r.headers["content-type"].startswith("application/json"), r.text
        assert r.json()["error"]["type"] == "internal_error"
        assert httpx.get(f"{url}/health").status_code == 200
        assert 'distilrank_requests_total{endpoint="/info",status="500"} 1.0' in httpx.get(f"{url}/metrics").text


def test_auth_on(ranker_runtime):
    app = create_app(ranker_runtime, ServerConfig(api_key="s3cret"))
    with running_server(app) as url:
        body = {"query": "q", "documents": ["a"]}
        r = httpx.post(f"{url}/v1/rerank", json=body)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert "Authorization: Bearer" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a"]},
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/info").status_code == 401
        assert httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # probes stay open
        with RerankClient(url, api_key="s3cret") as client:
            assert len(client.rerank("q", ["a", "b"]).results) == 2
        with RerankClient(url, api_key="nope") as client, \
                pytest.raises(RerankClientError, match="HTTP 401 unauthorized"):
            client.rerank("q", ["a"])


def test_cache_hits_and_identical_scores(ranker_runtime):
    app = create_app(ranker_runtime, ServerConfig(cache_size=3))
    with running_server(app) as url, RerankClient(url) as client:
        first = client.rerank("q", DOCS[:3])
        second = client.rerank("q", DOCS[:3])
        assert first.meta.cached == 0 and second.meta.cached == 3
        pairs = [[(r.index, r.relevance_score) for r in resp.results] for resp in (first, second)]
        assert pairs[0] == pairs[1]
        assert client.rerank("other query", DOCS[:1]).meta.cached == 0  # key includes the query
        assert client.rerank("q", DOCS[:3]).meta.cached == 2  # capacity 3: the oldest entry was evicted
        text = httpx.get(f"{url}/metrics").text
        ratio = float(next(line.split()[-1] for line in text.splitlines()
                           if line.startswith("distilrank_cache_hit_ratio ")))
        assert ratio == pytest.approx(5 / 10)


def test_client_retries_503_and_reports_errors(ranker_runtime):
    slow = SlowRuntime(ranker_runtime, delay_s=0.3)
    app = create_app(slow, ServerConfig(max_batch_pairs=2, max_wait_ms=0, max_queue=2, max_docs=2))
    with running_server(app) as url:
        holder = threading.Thread(target=lambda: httpx.post(
            f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=30))
        holder.start()
        time.sleep(0.05)
        blocker = threading.Thread(target=lambda: httpx.post(
            f"{url}/v1/rerank", json={"query": "q", "documents": ["c", "d"]}, timeout=30))
        blocker.start()
        time.sleep(0.05)
        with RerankClient(url, retry=RetryPolicy(retries=0)) as client, \
                pytest.raises(RerankClientError, match="503 queue_full"):
            client.rerank("q", ["e"])
        with RerankClient(url, retry=RetryPolicy(retries=5, backoff_s=0.2, max_backoff_s=0.5)) as client:
            assert len(client.rerank("q", ["e"]).results) == 1
        holder.join(10)
        blocker.join(10)
        with RerankClient(url) as client, pytest.raises(RerankClientError, match="413 too_many_documents"):
            client.rerank("q", ["a", "b", "c"])
    with RerankClient(url, retry=RetryPolicy(retries=1, backoff_s=0.01)) as client, \
            pytest.raises(RerankClientError, match="connection_error"):
        client.rerank("q", ["a"])


def test_graceful_shutdown_finishes_in_flight(ranker_runtime):
    slow = SlowRuntime(ranker_runtime, delay_s=0.5)
    app = create_app(slow, ServerConfig(max_wait_ms=0))
    result: dict[str, object] = {}
    with running_server(app) as url:
        def call() -> None:
            r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=30)
            result["status"], result["body"] = r.status_code, r.json()

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.15)  # request is in flight when the context exits and the server is told to stop
    t.join(10)
    assert result.get("status") == 200, result
    assert len(json.loads(json.dumps(result["body"]))["results"]) == 2


def test_head_answers_like_get_and_other_methods_get_the_error_schema(server):
    """HEAD on a GET endpoint is the GET without a body (probes use it); a method an endpoint does not serve is
    405 in the error schema (its headers for HEAD, which has no body)."""
    for path in ("/health", "/ready", "/metrics"):
        r = httpx.head(f"{server}{path}")
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)
        assert int(r.headers["content-length"]) == len(httpx.get(f"{server}{path}").content) or path == "/metrics"
    r = httpx.head(f"{server}/v1/rerank")
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/json")
    assert int(r.headers["content-length"]) > 0 and r.content == b""
    r = httpx.request("DELETE", f"{server}/health")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


def test_trailing_slash_is_a_307_in_the_error_schema(server):
    r = httpx.post(f"{server}/v1/rerank/", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 307 and r.headers["location"] == "/v1/rerank"
    assert r.json()["error"]["type"] == "redirect"
    followed = httpx.post(f"{server}/v1/rerank/", json={"query": "q", "documents": ["a"]}, follow_redirects=True)
    assert followed.status_code == 200 and len(followed.json()["results"]) == 1


def test_a_nan_score_is_a_500_never_a_null(ranker_model_dir, tmp_path):
    """A model whose output is NaN for one input: that request is answered 500 in the error schema (never 200
    with "relevance_score": null), the requests it shared a batch with are answered, nothing is cached."""
    from ranker.runtime import RerankRuntime, RuntimeConfig
    from tests.ranker.onnx_stubs import nan_on_token_model, token_id

    model = nan_on_token_model(tmp_path / "nan", ranker_model_dir, token_id(ranker_model_dir, "poison"))
    runtime = RerankRuntime.load(model, RuntimeConfig(threads=1))
    app = create_app(runtime, ServerConfig(max_wait_ms=200, cache_size=100))
    with running_server(app) as url:
        results: dict[int, httpx.Response] = {}

        def call(i: int) -> None:
            docs = ["fine", "poison"] if i == 0 else ["fine", f"also fine {i}"]
            results[i] = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": docs}, timeout=30)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results[0].status_code == 500, results[0].text
        assert results[0].json()["error"]["type"] == "scoring_failed"
        assert "NaN or infinity for 1 of 2 pair(s)" in results[0].json()["error"]["message"]
        assert all(results[i].status_code == 200 for i in (1, 2, 3)), {i: r.text for i, r in results.items()}
        assert "null" not in "".join(r.text for r in results.values())
        tei = httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["poison"]})
        assert tei.status_code == 500 and tei.json()["error"]["type"] == "scoring_failed"
        again = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["fine", "poison"]})
        assert again.status_code == 500 and again.json()["error"]["type"] == "scoring_failed"
