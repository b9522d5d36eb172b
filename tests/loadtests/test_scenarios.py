"""Real Locust runs of both scenarios against small stand-in HTTP servers on 127.0.0.1.

They pin down what the real-service tests cannot provoke: a fast *wrong* answer must count as a
failure (and so break the error-ratio SLO), and the OpenSearch scenario sends the rescore body and
checks hits without a node (the run against a real node lives in test_opensearch_plugin.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from distill.cli import main

Handler = Callable[[str, dict], tuple[int, dict]]


@contextmanager
def stand_in(answer: Handler) -> Iterator[tuple[str, list[tuple[str, dict]]]]:
    """A threaded HTTP server answering every request with ``answer(path, json_body)``; yields (url, seen)."""
    seen: list[tuple[str, dict]] = []

    class _H(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802  (preflight: /ready or /<index>)
            self._reply(200, {"ok": True})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            seen.append((self.path, body))
            self._reply(*answer(self.path, body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _loadtest(scenario: str, url: str, tmp_path: Path, slo: dict, *extra: str) -> int:
    (tmp_path / "slo.json").write_text(json.dumps(slo))
    return main(["loadtest", "--scenario", scenario, "--host", url, "--users", "1", "--spawn-rate", "1",
                 "--run-time", "3s", "--passages", "4", "--slo", str(tmp_path / "slo.json"),
                 "--out", str(tmp_path / "out"), *extra])


@pytest.mark.integration
def test_fast_wrong_rerank_answers_are_failures(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    def one_result_too_few(path: str, body: dict) -> tuple[int, dict]:
        n = len(body["documents"]) - 1
        return 200, {"id": "x", "results": [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(n)],
                     "meta": {}}

    slo = {"scenario": "ranker", "total": {"p95_ms": 60000, "max_error_ratio": 0.01}}
    with stand_in(one_result_too_few) as (url, seen):
        assert _loadtest("ranker", url, tmp_path, slo) == 5
    assert seen and all(len(body["documents"]) == 4 for _, body in seen)
    err = capfd.readouterr().err
    assert re.search(r"total max_error_ratio: measured 1, limit <= 0\.01", err), err[-2000:]
    failures = (tmp_path / "out" / "locust_failures.csv").read_text()
    assert "3 results for 4 documents" in failures


@pytest.mark.integration
def test_opensearch_scenario_sends_rescore_body_and_checks_hits(tmp_path: Path) -> None:
    def sorted_hits(path: str, body: dict) -> tuple[int, dict]:
        hits = [{"_id": str(i), "_score": 10.0 - i} for i in range(body["size"])]
        return 200, {"hits": {"total": {"value": 100, "relation": "eq"}, "hits": hits}}

    slo = {"scenario": "opensearch", "total": {"max_error_ratio": 0.0},
           "endpoints": {"POST /_search+rescore": {"p99_ms": 60000}}}
    with stand_in(sorted_hits) as (url, seen):
        assert _loadtest("opensearch", url, tmp_path, slo, "--index", "scifact") == 0
    path, body = seen[0]
    assert path == "/scifact/_search" and body["size"] == 4
    assert body["rescore"]["window_size"] == 4
    assert body["rescore"]["distilrank"]["query_text"] == body["query"]["multi_match"]["query"]
    assert body["rescore"]["distilrank"]["fields"] == ["title", "text"]
    result = json.loads((tmp_path / "out" / "slo_result.json").read_text())
    assert result["passed"] and result["measured"]["POST /_search+rescore"]["failures"] == 0
