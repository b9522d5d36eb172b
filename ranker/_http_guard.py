"""The outermost ASGI layer of the ranker app: it sees every request and every response.

In this order, before FastAPI parses anything:

1. auth: a protected path without the right bearer token gets 401 and its body is never read;
2. size: a ``Content-Length`` above ``max_body_bytes`` gets 413 at once; a chunked body is counted
   while it is read and refused (413) the moment it passes the limit;
3. time: the whole body must arrive within ``body_timeout_s`` of the end of the headers (408), however it is
   paced (a body trickled a byte at a time is cut then, not kept alive by each byte);
4. content: each chunk is fed to a :class:`~ranker._body_scan.BodyScanner` as it arrives, so a body over the
   document count or bytes per document is refused (413) at the chunk that crosses the limit, before it is
   parsed whole;
5. every response, including 500s from bugs and 503s for requests cut off by the shutdown timeout,
   is counted in ``distilrank_requests_total{endpoint, status}`` and has the JSON error schema.

``HEAD`` on a GET endpoint is answered as the GET (the server sends no body). Early errors are sent with
``Connection: close``: the rest of an unread body is never read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ranker._body_scan import BodyScanner, ScanLimits
from ranker.metrics import RankerMetrics
from ranker.protocol import ApiError

if TYPE_CHECKING:
    from ranker.service import InFlight

__all__ = ["GuardSettings", "RequestGuard", "error_bytes"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: endpoints with their own metric label; anything else is counted as "other" (bounded cardinality)
KNOWN_PATHS = frozenset({"/v1/rerank", "/rerank", "/health", "/ready", "/info", "/metrics", "/openapi.json", "/docs"})
#: GET endpoints, which answer HEAD as GET
GET_PATHS = frozenset({"/health", "/ready", "/info", "/metrics", "/openapi.json", "/docs"})


@dataclass(frozen=True)
class GuardSettings:
    """``auth_paths`` need the bearer token when ``api_key`` is set; ``body_paths`` have their POST body
    read (and bounded) here, and scanned with ``scans[path]`` where there is one. ``body_timeout_s`` bounds the
    time the whole body may take to arrive (seconds)."""

    api_key: str | None
    max_body_bytes: int
    body_timeout_s: float
    auth_paths: frozenset[str] = frozenset({"/v1/rerank", "/rerank", "/info"})
    body_paths: frozenset[str] = frozenset({"/v1/rerank", "/rerank"})
    scans: Mapping[str, ScanLimits] = field(default_factory=dict)


def error_bytes(exc: ApiError) -> bytes:
    return json.dumps(exc.body()).encode()


def authorized(api_key: str | None, authorization: str | None) -> bool:
    if api_key is None:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    # header values are Latin-1; config refuses a key that Latin-1 cannot hold
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("latin-1"),
                                                              api_key.encode("latin-1"))


class _Disconnected(Exception):
    pass


class RequestGuard:
    def __init__(self, app: ASGIApp, *, settings: GuardSettings, metrics: RankerMetrics, inflight: InFlight):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.inflight = inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = time.monotonic()  # deadlines count from here
        path = scope["path"]
        if scope.get("method") == "HEAD" and path in GET_PATHS:
            # a copy: uvicorn keeps its own scope's HEAD and so sends no body
            scope = {**scope, "method": "GET"}
        endpoint = path if path in KNOWN_PATHS else "other"
        status = 0

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.inflight.now += 1
        try:
            try:
                receive = await self._admit(scope, receive)
            except ApiError as exc:
                await self._send_error(observed_send, exc, close=True)
                return
            except _Disconnected:
                return
            await self.app(scope, receive, observed_send)
        except asyncio.CancelledError:
            # only uvicorn's graceful-shutdown timeout cancels request tasks: answer instead of cutting
            # the connection (a 503 is retried on another replica), and count it as dropped
            if status:
                raise
            self.inflight.dropped += 1
            await self._send_error(observed_send, ApiError(
                503, "shutting_down", "the server stopped before this request was finished (graceful shutdown "
                "timeout); retry on another replica", headers={"Retry-After": "1"}), close=True)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), path)
            if status:
                raise
            await self._send_error(observed_send, ApiError(
                500, "internal_error", "the server failed on this request (a bug: see the server log); "
                "the request was not processed"), close=True)
        finally:
            self.inflight.now -= 1
            # answered below the app (a malformed chunked body: 400), else 499: the client went away before any
            # response (nginx's convention), so it is still counted, once
            status = status or scope.get("state", {}).get("answered_below", 499)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            if endpoint in self.settings.body_paths:
                self.metrics.request_latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _admit(self, scope: Scope, receive: Receive) -> Receive:
        """Auth, then the size limit, then the body (read here, with timeouts); returns a receive that
        replays it. Raises ApiError for the early answers and _Disconnected when the client left."""
        s = self.settings
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if path in s.auth_paths and not authorized(s.api_key, headers.get("authorization")):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token: send 'Authorization: Bearer <key>' "
                           "with the key the server was started with", headers={"WWW-Authenticate": "Bearer"})
        if path not in s.body_paths or scope.get("method") != "POST":
            return receive
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise ApiError(400, "invalid_header", f"Content-Length={length[:32]!r} is not a byte count")
            if int(length) > s.max_body_bytes:
                raise self._too_large(int(length))
        body = await self._read_body(receive, s.scans.get(path))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _read_body(self, receive: Receive, limits: ScanLimits | None) -> bytes:
        """The whole body, read within ``body_timeout_s`` and scanned chunk by chunk as it arrives."""
        s = self.settings
        scanner = BodyScanner(limits) if limits is not None else None
        deadline = time.monotonic() + s.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise ApiError(408, "request_timeout", f"the request body was not complete within {s.body_timeout_s:g}"
                               f" s ({size} bytes arrived); send the whole body at once") from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if scanner is not None:  # first: a limit the chunk crosses before the byte limit answers more precisely
                scanner.feed(chunk)
            size += len(chunk)
            if size > s.max_body_bytes:
                raise self._too_large(size, partial=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int, partial: bool = False) -> ApiError:
        what = f"more than {self.settings.max_body_bytes}" if partial else str(size)
        return ApiError(413, "body_too_large", f"the request body has {what} bytes > max_body_bytes="
                        f"{self.settings.max_body_bytes}; send fewer or shorter documents (or restart the server "
                        "with a larger --max-body-bytes)")

    async def _send_error(self, send: Send, exc: ApiError, close: bool) -> None:
        self.metrics.errors.labels(exc.type).inc()
        body = error_bytes(exc)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
