"""A deterministic stand-in for the ranker's HTTP API on 127.0.0.1, with switchable failure modes.

``POST /v1/rerank`` (Cohere shape, ``meta.score`` = ``score``) and ``GET /info`` (``interpolation``, ``score``,
``card_sha256``). The real service is exercised in ranker's tests and behind the plugin in test_plugin.py.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: the failure modes of ``POST /v1/rerank``
MODES = ("ok", "constant", "slow", "garbage", "wrong_count", "error503", "error400")
READ_TIMEOUT_S = 1.0
CONSTANT = 2.5


def fake_score(query: str, doc: str) -> float:
    """Query-token overlap plus a tiny deterministic, tie-free fraction of the document's hash."""
    q = set(re.findall(r"\w+", query.lower()))
    overlap = sum(1 for t in re.findall(r"\w+", doc.lower()) if t in q)
    return overlap + (zlib.crc32(doc.encode()) % 10007) / 100070.0


class FakeRanker:
    """``mode`` in :data:`MODES`; ``info`` is what ``GET /info`` answers; ``requests`` records rerank bodies."""

    def __init__(self, interpolation: dict[str, object] | None = None, card_sha256: str = "card-a",
                 score: str = "raw_logit") -> None:
        self.mode = "ok"
        self.requests: list[dict[str, object]] = []
        self.info_requests = 0
        self.info: dict[str, object] = {"model": "fake", "score": score, "card_sha256": card_sha256,
                                        "interpolation": interpolation}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _rerank_payload(self, body: dict[str, object]) -> tuple[int, bytes]:
        docs = body["documents"]
        if self.mode == "slow":
            time.sleep(READ_TIMEOUT_S * 3)
        if self.mode == "garbage":
            return 200, b'{"results": [{"index": 0, "relevance_sc'
        if self.mode in ("error503", "error400"):
            status = int(self.mode[-3:])
            return status, json.dumps({"error": {"type": "x", "message": self.mode}}).encode()
        results = [{"index": i, "relevance_score": CONSTANT if self.mode == "constant" else
                    fake_score(str(body["query"]), d)} for i, d in enumerate(docs)]  # type: ignore[arg-type]
        results.sort(key=lambda r: -r["relevance_score"])
        if self.mode == "wrong_count":
            results = results[:-1]
        return 200, json.dumps({"id": "x", "results": results,
                                "meta": {"model": "fake", "score": self.info["score"]}}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/info":
                    self._send(404, b"{}")
                    return
                outer.info_requests += 1
                self._send(200, json.dumps(outer.info).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                self._send(*outer._rerank_payload(body))

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
