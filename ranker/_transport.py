"""uvicorn plumbing for ``distilrank serve``: a header read timeout and a shutdown that says what it dropped.

uvicorn has no timeout for a connection that is open but has not finished sending its request line and
headers (``timeout_keep_alive`` only runs *between* requests), so a client that sends half a request
line would hold a connection, and a slot, forever. :func:`header_timeout_protocol` closes such a
connection after ``timeout_s`` with a 408 in the JSON error schema. Body stalls are handled in the
app (:mod:`ranker._http_guard`), where a 408 can still be answered through ASGI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DrainingServer", "header_timeout_protocol"]

logger = logging.getLogger(__name__)


def _raw_error(status: int, reason: str, type_: str, message: str) -> bytes:
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode("ascii")
    return head + body


class _HeaderTimeoutH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    #: called with (status, error type, scope) for the answers given here, below the app (so /metrics counts them);
    #: scope is the ASGI scope of the request the app is handling on this connection, else None
    on_error: Callable[[int, str, dict[str, Any] | None], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # h11 leaves IDLE only when a request's line and headers are complete
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()
        else:
            self._disarm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written (pipelining); its own cycle ends the connection
        self.transport.write(_raw_error(408, "Request Timeout", "request_timeout", "the request line and headers were "
                                        f"not complete within {self.header_timeout_s:g} s"))
        self.transport.close()
        if self.on_error is not None:
            self.on_error(408, "request_timeout", None)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot parse, in the JSON error schema instead of text/plain.

        A request whose headers were parsed is being handled by the app, which will see the connection close:
        its scope is passed on, so that the answer is counted once, under its endpoint, not also as a 499."""
        self._disarm()
        in_app = self.cycle is not None and not self.cycle.response_complete
        where = "the request line, headers or chunked body" if in_app else "the request line and headers"
        self.transport.write(_raw_error(400, "Bad Request", "invalid_http", f"{msg} Check {where} "
                                        "(header block at most 16 KiB)"))
        self.transport.close()
        if self.on_error is not None:
            scope = self.cycle.scope if in_app else None  # type: ignore[union-attr]
            self.on_error(400, "invalid_http", scope)  # type: ignore[arg-type]


def header_timeout_protocol(timeout_s: float,
                            on_error: Callable[[int, str, dict[str, Any] | None], None] | None = None,
                            ) -> type[H11Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` that answers 408 and closes a connection whose
    request line and headers are not complete ``timeout_s`` seconds after it opened (or after the first byte
    of a keep-alive connection's next request), and answers unparsable requests with a JSON 400.
    ``on_error(status, type, scope)`` is called for each such answer."""
    return type("DistilrankH11Protocol", (_HeaderTimeoutH11Protocol,),
                {"header_timeout_s": timeout_s, "on_error": staticmethod(on_error) if on_error else None})


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that tells the app when draining starts (``on_drain``), before uvicorn stops
    accepting connections and waits ``timeout_graceful_shutdown`` seconds for requests in flight."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None] | None = None,
                 sock: socket.socket | None = None):
        super().__init__(config)
        self._on_drain = on_drain
        self._sock = sock

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve on the socket bound before the model loaded, when there is one."""
        if sockets is None and self._sock is not None:
            sockets = [self._sock]
        await super().serve(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_drain is not None:
            self._on_drain()
        await super().shutdown(sockets)
