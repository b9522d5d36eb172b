"""Table-driven fault injection against the real ``distilrank serve`` on 127.0.0.1.

One row per bad body, header or connection behaviour. Each row asserts the HTTP status, that it is not a
5xx, that it came in time (rows over a streaming limit send a body that never completes, so only the scan
can answer them that fast), that the body is the JSON error schema (``{"error": {"type", "message"}}``)
and short (nothing long is echoed back), and that ``/metrics`` counted exactly that response, once. The
deliberate 5xx are the isolation case (a request whose scoring raises gets its 500 and the requests that
shared its batch are answered) and a model whose scores are NaN for one input.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from ranker.process import serving, start_serve, stop_serve
from ranker.server import ServerConfig, create_app
from tests.ranker_fixtures import SlowRuntime, http_request, metric_value, raw_exchange, running_server

pytestmark = [pytest.mark.faults, pytest.mark.integration]

KEY = "fault-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 64 * 1024
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_DOCS = 20
MAX_CHARS = 500
TEXT_BYTES = 12 * MAX_CHARS + 1024  # ServerConfig.max_text_bytes()
#: an answer this fast cannot have waited for the body timeout (BODY_TIMEOUT): it came from the scan
BEFORE_BODY_TIMEOUT = BODY_TIMEOUT / 2


def _post(body: bytes | str, path: str = "/v1/rerank", headers: dict[str, str] | None = None, auth: bool = True,
          content_length: int | None = None) -> bytes:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return http_request("POST", path, raw, {**(AUTH if auth else {}), **(headers or {})}, content_length)


def _chunked(body: bytes, size: int = 8192) -> bytes:
    pieces = (b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return b"".join(pieces) + b"0\r\n\r\n"


def _unfinished(body: bytes, path: str = "/v1/rerank") -> list[bytes | float]:
    """``body`` sent under a Content-Length it never reaches, then silence: only an answer from the scan of what
    did arrive can come before the body timeout."""
    return [_post(body, path=path, content_length=BODY_LIMIT - 1), BODY_TIMEOUT * 3]


def _trickled(body: bytes, pause: float) -> list[bytes | float]:
    """The headers, then ``body`` one byte at a time, ``pause`` seconds apart (each pause shorter than the body
    timeout, the whole far longer)."""
    parts: list[bytes | float] = [_post(b"", content_length=len(body))]
    for i in range(len(body)):
        parts += [body[i:i + 1], pause]
    return parts


def _docs(n: int, text: bytes = b"x") -> bytes:
    return b",".join([b'"' + text + b'"'] * n)



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
    max_answer_bytes: int = 2000  # no error echoes a long input back


BIG = b'{"query": "q", "documents": ["x"], "pad": "' + b"x" * (BODY_LIMIT + 10) + b'"}'

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
    Fault("deeply nested JSON", [_post(b'{"query": "q", "documents": ["x"], "meta": ' + b"[" * 30_000 + b"]" * 30_000
                                       + b"}")], 400, "invalid_body", "more than 64 levels deep"),
    Fault("JSON array instead of object", [_post(b"[]")], 422, "invalid_request", "must be a JSON object"),
    Fault("deeply nested top-level array", [_post(b"[" * 30_000 + b"]" * 30_000)], 422, "invalid_request",
          "must be a JSON object"),
    Fault("not JSON at all", [_post(b"query=q&documents=x")], 400, "invalid_json", "not valid JSON"),
    Fault("unbalanced bracket", [_post(b'{"query": "q", "documents": ["x"]]}')], 400, "invalid_json",
          "unexpected ']'"),
    Fault("data after the object", [_post(b'{"query": "q", "documents": ["x"]} {}')], 400, "invalid_json",
          "more after the closing"),
    Fault("empty body", [_post(b"")], 422, "invalid_request", "Field required"),
    Fault("text/plain body", [_post(b'{"query": "q", "documents": ["x"]}', headers={"Content-Type": "text/plain"})],
          422, "invalid_request"),
    Fault("top_n overflows to inf", [_post(b'{"query": "q", "documents": ["x"], "top_n": 1e400}')], 422,
          "invalid_request", "top_n"),
    Fault("NaN literal", [_post(b'{"query": "q", "documents": ["x"], "top_n": NaN}')], 422, "invalid_request",
          "top_n"),
    # strict types: nothing is coerced
    Fault("top_n as a string", [_post(b'{"query": "q", "documents": ["x", "y"], "top_n": "2"}')], 422,
          "invalid_request", "top_n: Input should be a valid integer"),
    Fault("top_n true", [_post(b'{"query": "q", "documents": ["x", "y"], "top_n": true}')], 422, "invalid_request",
          "top_n: Input should be a valid integer"),
    Fault("top_n 2.0", [_post(b'{"query": "q", "documents": ["x", "y"], "top_n": 2.0}')], 422, "invalid_request",
          "top_n"),
    Fault("return_documents as a string", [_post(b'{"query": "q", "documents": ["x"], "return_documents": "yes"}')],
          422, "invalid_request", "return_documents: Input should be a valid boolean"),
    Fault("TEI raw_scores as a number", [_post(b'{"query": "q", "texts": ["x"], "raw_scores": 1}', path="/rerank")],
          422, "invalid_request", "raw_scores", endpoint="/rerank"),
    Fault("unknown field", [_post(b'{"query": "q", "documents": ["x"], "top_k": 3}')], 422, "invalid_request",
          "top_k: unknown field"),
    Fault("200 KB unknown field name", [_post(b'{"query": "q", "documents": ["x"], "' + b"k" * 60_000 + b'": 1}')],
          422, "invalid_request", r"^k{64}\.\.\. \(60000 characters\): unknown field"),
    Fault("too many documents", [_post(json.dumps({"query": "q", "documents": ["x"] * 21}))], 413,
          "too_many_documents", "more than 20 documents"),
    Fault("text too long", [_post(json.dumps({"query": "q", "documents": ["x" * 501]}))], 413, "text_too_long",
          "document 0 has 501 characters"),
    # limits while the body streams in: answered from what arrived, before the body is complete
    Fault("too many documents, body unfinished", _unfinished(b'{"query": "q", "documents": [' + _docs(21)), 413,
          "too_many_documents", "more than 20 documents", max_seconds=BEFORE_BODY_TIMEOUT),
    Fault("too many document objects, body unfinished",
          _unfinished(b'{"query": "q", "documents": [' + b",".join([b'{"text": "x", "id": [1, {"a": "]"}]}'] * 21)),
          413, "too_many_documents", max_seconds=BEFORE_BODY_TIMEOUT),
    Fault("too many TEI texts, body unfinished", _unfinished(b'{"query": "q", "texts": [' + _docs(21), "/rerank"),
          413, "too_many_documents", "more than 20 texts", endpoint="/rerank", max_seconds=BEFORE_BODY_TIMEOUT),
    Fault("escaped field name is still counted", _unfinished(b'{"query": "q", "docu\\u006dents": [' + _docs(21)),
          413, "too_many_documents", max_seconds=BEFORE_BODY_TIMEOUT),
    Fault("a document over its bytes, body unfinished",
          _unfinished(b'{"query": "q", "documents": ["a", "' + b"x" * (TEXT_BYTES + 1)), 413, "text_too_long",
          rf"documents\[1\] has more than {TEXT_BYTES} bytes", max_seconds=BEFORE_BODY_TIMEOUT),
    Fault("a query over its bytes, body unfinished", _unfinished(b'{"query": "' + b"\\n" * TEXT_BYTES), 413,
          "text_too_long", f"query has more than {TEXT_BYTES} bytes", max_seconds=BEFORE_BODY_TIMEOUT),
    # chunked, so the body limit (64 KiB here) cannot answer first: see test_two_million_documents_within_limits
    Fault("2,000,000 tiny documents (26 MB)", [_post(_chunked(b'{"query": "q", "documents": [' + b",".join(
        [b'{"text":"x"}'] * 2_000_000) + b"]}", size=65536), headers={"Transfer-Encoding": "chunked"},
        content_length=-1)], 413, "too_many_documents", max_seconds=BEFORE_BODY_TIMEOUT),
    Fault("document count via a chunked body", [_post(_chunked(b'{"query": "q", "documents": [' + _docs(5000) + b"]}"),
                                                      headers={"Transfer-Encoding": "chunked"}, content_length=-1)],
          413, "too_many_documents", max_seconds=BEFORE_BODY_TIMEOUT),
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
    Fault("header block over 16 KiB", [b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000, 0.3,
                                       b"\r\n\r\n"], 400, "invalid_http", endpoint="other"),
    Fault("headers stall", [b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\n"], 408, "request_timeout",
          "request line and headers", endpoint="other", max_seconds=HEADER_TIMEOUT + 2),
    Fault("body stalls", [_post(b'{"query": "q", "documents": ["x"]}', content_length=100)], 408, "request_timeout",
          f"not complete within {BODY_TIMEOUT:g} s", max_seconds=BODY_TIMEOUT + 2),
    # each byte comes within the body timeout; the whole body does not
    Fault("body trickled a byte at a time", _trickled(b'{"query": "q", "documents": ["x"]}', BODY_TIMEOUT / 4), 408,
          "request_timeout", f"not complete within {BODY_TIMEOUT:g} s", max_seconds=BODY_TIMEOUT + 1),
    Fault("malformed chunked encoding", [_post(b"5\r\n{\"que\r\nZZ\r\nxx\r\n",
                                               headers={"Transfer-Encoding": "chunked"}, content_length=-1)],
          400, "invalid_http", "chunked body"),
    Fault("unknown path", [http_request("GET", "/v2/rerank")], 404, "not_found", "/openapi.json", endpoint="other"),
    Fault("unknown 200 KB path", [http_request("GET", "/" + "p" * 20_000)], 404, "not_found", endpoint="other"),
    Fault("wrong method", [http_request("GET", "/v1/rerank", headers=AUTH)], 405, "method_not_allowed"),
    Fault("DELETE /health", [http_request("DELETE", "/health")], 405, "method_not_allowed", "DELETE is not allowed",
          endpoint="/health"),
    Fault("trailing slash", [_post(b'{"query": "q", "documents": ["x"]}', path="/v1/rerank/")], 307, "redirect",
          "/v1/rerank, without the trailing slash", endpoint="other"),
]


@pytest.fixture(scope="module")
def fault_server(ranker_model_dir):
    args = ("--threads", "1", "--max-docs", "20", "--max-chars", "500", "--max-body-bytes", str(BODY_LIMIT),
            "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT), "--api-key", KEY)
    with serving(ranker_model_dir, *args, quiet=True) as url:
        yield url


def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics").text


def _answers(text: str) -> float:
    """Responses counted in /metrics, the scrapes of /metrics itself left out."""
    samples = [line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("distilrank_requests_total{")]
    return sum(float(value) for key, value in samples if 'endpoint="/metrics"' not in key)


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
    assert len(body) <= fault.max_answer_bytes, f"{len(body)} bytes of answer"
    after = _metrics(fault_server)
    assert _answers(after) == _answers(before) + 1, "each request is counted once"
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


def test_two_million_documents_within_the_default_limits(ranker_model_dir):
    """26 MB of one-character documents fits the default byte limit (about 121 MB): it is refused from its first
    chunks instead of being parsed whole (which took 15 s and 1.7 GB), and /health answers meanwhile."""
    proc, url = start_serve(ranker_model_dir, "--threads", "1", quiet=True)
    health: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                t0 = time.monotonic()
                client.get(f"{url}/health")
                health.append(time.monotonic() - t0)
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    try:
        body = b'{"query": "q", "documents": [' + b",".join([b'{"text":"x"}'] * 2_000_000) + b"]}"
        assert 25e6 < len(body) < ServerConfig().body_limit()
        poller.start()
        while not health:
            time.sleep(0.01)
        status, _, answer, seconds = raw_exchange(url, [_post(body), 0.3])
        time.sleep(0.2)
        stop.set()
        poller.join(10)
        assert status == 413 and json.loads(answer)["error"]["type"] == "too_many_documents", answer
        peak_kb = next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status")
                       if line.startswith("VmHWM:"))
    finally:
        stop.set()
        stop_serve(proc)
    # generous bounds for a shared machine; bench.body_limits measures the real figures
    assert seconds < 2.0, f"413 after {seconds:.2f} s"
    assert peak_kb < 600_000, f"peak RSS {peak_kb} kB"
    assert health and max(health) < 1.0, f"/health took {max(health):.3f} s"
