"""Table-driven fault injection against the real ``distilrank serve`` on 127.0.0.1.

One row per bad body, header or connection behaviour. Each row asserts the HTTP status, that it is not a
5xx, that the body is the JSON error schema (``{"error": {"type", "message"}}``) and that ``/metrics``
counted exactly that response. The only deliberate 5xx is the isolation case at the end: a request whose
scoring raises gets its 500 and the requests that shared its batch are answered.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field

import httpx
import pytest

from ranker.server import ServerConfig, create_app
from tests.ranker_fixtures import SlowRuntime, http_request, metric_value, raw_exchange, running_server
from tests.serve_process import serving

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KEY = "fault-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 64 * 1024
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0


def _post(body: bytes | str, path: str = "/v1/rerank", headers: dict[str, str] | None = None, auth: bool = True,
          content_length: int | None = None) -> bytes:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return http_request("POST", path, raw, {**(AUTH if auth else {}), **(headers or {})}, content_length)


def _chunked(body: bytes, size: int = 8192) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)) + b"0\r\n\r\n"


@dataclass(frozen=True)
class Fault:
    name: str
    parts: list[bytes | float]
    status: int
    etype: str
    match: str = ""
    endpoint: str = "/v1/rerank"
    max_seconds: float = 5.0  # the answer must come this fast (early rejects must not wait for the body)
    extra_headers: dict[str, str] = field(default_factory=dict)


BIG = b'{"query": "q", "documents": ["' + b"x" * (BODY_LIMIT + 10) + b'"]}'

FAULTS = [
    Fault("lone surrogate in query", [_post('{"query": "\\ud800", "documents": ["x"]}')], 422, "invalid_request",
          r"query: .*invalid Unicode: lone surrogate U\+D800"),
    Fault("lone surrogate in documents.3", [_post('{"query": "q", "documents": ["a", "b", "c", "x\\udfff"]}')], 422,
          "invalid_request", r"documents\.3: .*lone surrogate U\+DFFF at character 1"),
    Fault("lone surrogate in a document object", [_post('{"query": "q", "documents": [{"text": "\\udc00"}]}')], 422,
          "invalid_request", r"documents\.0: .*invalid Unicode"),
    Fault("lone surrogate in TEI texts.1", [_post('{"query": "q", "texts": ["a", "\\ud800"]}', path="/rerank")], 422,
          "invalid_request", r"texts\.1: .*invalid Unicode", endpoint="/rerank"),
    Fault("raw invalid UTF-8 bytes", [_post(b'{"query": "\xff\xfe", "documents": ["x"]}')], 400, "invalid_body",
          "not UTF-8 JSON"),
    Fault("truncated JSON", [_post(b'{"query": "q", "documents": [')], 400, "invalid_json", "not valid JSON"),
    Fault("deeply nested JSON", [_post(b"[" * 30_000 + b"]" * 30_000)], 400, "invalid_body"),
    Fault("JSON array instead of object", [_post(b"[]")], 422, "invalid_request"),
    Fault("empty body", [_post(b"")], 422, "invalid_request", "Field required"),
    Fault("text/plain body", [_post(b'{"query": "q", "documents": ["x"]}', headers={"Content-Type": "text/plain"})],
          422, "invalid_request"),
    Fault("top_n overflows to inf", [_post(b'{"query": "q", "documents": ["x"], "top_n": 1e400}')], 422,
          "invalid_request", "top_n"),
    Fault("NaN literal", [_post(b'{"query": "q", "documents": ["x"], "top_n": NaN}')], 422, "invalid_request", "top_n"),
    Fault("unknown field", [_post(b'{"query": "q", "documents": ["x"], "top_k": 3}')], 422, "invalid_request",
          "top_k: unknown field"),
    Fault("too many documents", [_post(json.dumps({"query": "q", "documents": ["x"] * 21}))], 413,
          "too_many_documents", "21 documents > max_docs=20"),
    Fault("text too long", [_post(json.dumps({"query": "q", "documents": ["x" * 501]}))], 413, "text_too_long"),
    Fault("deadline header not a number", [_post(b'{"query": "q", "documents": ["x"]}',
                                                 headers={"X-Request-Timeout-Ms": "soon"})], 400, "invalid_header"),
    Fault("deadline header negative", [_post(b'{"query": "q", "documents": ["x"]}',
                                             headers={"X-Request-Timeout-Ms": "-5"})], 400, "invalid_header"),
    Fault("deadline header inf", [_post(b'{"query": "q", "documents": ["x"]}',
                                        headers={"X-Request-Timeout-Ms": "inf"})], 400, "invalid_header"),
    Fault("no bearer token", [_post(b'{"query": "q", "documents": ["x"]}', auth=False)], 401, "unauthorized",
          "Authorization: Bearer"),
    Fault("wrong bearer token", [_post(b'{"query": "q", "documents": ["x"]}', auth=False,
                                       headers={"Authorization": "Bearer nope"})], 401, "unauthorized"),
    # auth comes first: a 300 MB announced body is refused without reading a byte of it
    Fault("no token, 300 MB announced, body never sent", [_post(b"", auth=False, content_length=300_000_000)], 401,
          "unauthorized", max_seconds=1.0),
    Fault("Content-Length over the limit", [_post(b"", content_length=300_000_000)], 413, "body_too_large",
          f"300000000 bytes > max_body_bytes={BODY_LIMIT}", max_seconds=1.0),
    Fault("chunked body over the limit", [_post(_chunked(BIG), headers={"Transfer-Encoding": "chunked"},
                                                content_length=-1)], 413, "body_too_large",
          f"more than {BODY_LIMIT} bytes"),
    Fault("Expect 100-continue over the limit", [_post(b"", content_length=10_000_000,
                                                       headers={"Expect": "100-continue"})], 413, "body_too_large",
          max_seconds=1.0),
    Fault("Content-Length not a number", [_post(b"{}", content_length=-1, headers={"Content-Length": "abc"})], 400,
          "invalid_http", endpoint="other"),
    Fault("garbage request line", [b"HELLO\r\n\r\n"], 400, "invalid_http", endpoint="other"),
    Fault("header block over 16 KiB", [b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000, 0.3, b"\r\n\r\n"], 400,
          "invalid_http", endpoint="other"),
    Fault("headers stall", [b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\n"], 408, "request_timeout",
          "request line and headers", endpoint="other", max_seconds=HEADER_TIMEOUT + 2),
    Fault("body stalls", [_post(b'{"query": "q", "documents": ["x"]}', content_length=100)], 408, "request_timeout",
          "stalled", max_seconds=BODY_TIMEOUT + 2),
    Fault("unknown path", [http_request("GET", "/v2/rerank")], 404, "not_found", "/openapi.json", endpoint="other"),
    Fault("wrong method", [http_request("GET", "/v1/rerank", headers=AUTH)], 405, "method_not_allowed"),
]


@pytest.fixture(scope="module")
def fault_server(ranker_model_dir):
    args = ("--threads", "1", "--max-docs", "20", "--max-chars", "500", "--max-body-bytes", str(BODY_LIMIT),
            "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--api-key", KEY)
    with serving(ranker_model_dir, *args, quiet=True) as url:
        yield url


def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics").text


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault_server, fault: Fault):
    before = _metrics(fault_server)
    status, headers, body, seconds = raw_exchange(fault_server, fault.parts)
    assert status == fault.status, (status, body[:300])
    assert status < 500
    assert seconds < fault.max_seconds, f"answered after {seconds:.2f} s"
    assert headers.get("content-type", "").startswith("application/json"), headers
    payload = json.loads(body)
    assert set(payload) == {"error"} and set(payload["error"]) == {"type", "message"}, payload
    assert payload["error"]["type"] == fault.etype, payload
    assert re.search(fault.match, payload["error"]["message"]), payload
    after = _metrics(fault_server)
    labels = {"endpoint": fault.endpoint, "status": str(fault.status)}
    assert metric_value(after, "distilrank_requests_total", **labels) == \
        metric_value(before, "distilrank_requests_total", **labels) + 1, labels
    assert metric_value(after, "distilrank_errors_total", type=fault.etype) == \
        metric_value(before, "distilrank_errors_total", type=fault.etype) + 1
    # the server is still healthy after every fault
    ok = httpx.post(f"{fault_server}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, headers=AUTH)
    assert ok.status_code == 200, ok.text


class PoisonRuntime(SlowRuntime):
    """Raises on any batch holding a document that contains POISON (a stand-in for an input the model
    chokes on that validation cannot foresee)."""

    def score_pairs(self, queries, docs):
        if any("POISON" in d for d in docs):
            self.calls.append(len(docs))
            raise RuntimeError("tokenizer exploded on this input")
        return super().score_pairs(queries, docs)


def test_failing_request_does_not_fail_its_batch(ranker_runtime):
    poison = PoisonRuntime(ranker_runtime, delay_s=0.0)
    # a long fill wait so the concurrent requests share one batch
    app = create_app(poison, ServerConfig(max_wait_ms=300, max_batch_pairs=64))
    with running_server(app) as url:
        results: dict[int, httpx.Response] = {}

        def call(i: int) -> None:
            doc = "POISON here" if i == 3 else f"valid document {i}"
            results[i] = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": [doc, "another"]}, timeout=30)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert max(poison.calls) > 2, f"the requests were not batched together: {poison.calls}"
        statuses = {i: r.status_code for i, r in results.items()}
        assert statuses == {i: (500 if i == 3 else 200) for i in range(8)}, statuses
        err = results[3].json()["error"]
        assert err["type"] == "scoring_failed" and "RuntimeError" in err["message"]
        assert results[3].headers["content-type"].startswith("application/json")
        text = _metrics(url)
        assert metric_value(text, "distilrank_requests_total", endpoint="/v1/rerank", status="500") == 1
        assert metric_value(text, "distilrank_requests_total", endpoint="/v1/rerank", status="200") == 7
        assert metric_value(text, "distilrank_errors_total", type="scoring_failed") == 1
