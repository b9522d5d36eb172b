"""HTTP client for the rerank service (sync and async), used by the OpenSearch client-side path and
the load tests. Timeouts and retries are explicit: only 503 (queue full / not ready, honouring
Retry-After up to ``max_backoff_s``) and connection failures are retried; 4xx and 504 never are,
since repeating them cannot succeed or would blow the caller's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ranker.protocol import DEADLINE_HEADER, RerankRequest, RerankResponse

__all__ = ["AsyncRerankClient", "RerankClient", "RerankClientError", "RetryPolicy"]

logger = logging.getLogger(__name__)


class RerankClientError(Exception):
    """The server answered with an error (``status``, ``type`` from its JSON error body) or could not be reached
    (status 0)."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(f"HTTP {status} {type_}: {message}" if status else f"{type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message


@dataclass(frozen=True)
class RetryPolicy:
    """``retries``: extra attempts after the first. Backoff doubles from ``backoff_s`` up to ``max_backoff_s``."""

    retries: int = 2
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("retries, backoff_s and max_backoff_s must be >= 0")

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        return min(self.backoff_s * (2 ** attempt), self.max_backoff_s)


def _payload(query: str, documents: Sequence[str], top_n: int | None, return_documents: bool) -> dict[str, object]:
    req = RerankRequest(query=query, documents=list(documents), top_n=top_n, return_documents=return_documents)
    return req.model_dump(exclude_none=True, exclude_defaults=True) | {"query": query, "documents": list(documents)}


def _headers(api_key: str | None, timeout_ms: float | None) -> dict[str, str]:
    headers = {}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if timeout_ms is not None:
        headers[DEADLINE_HEADER] = str(int(timeout_ms))
    return headers


def _parse(response: httpx.Response) -> RerankResponse:
    if response.status_code == 200:
        return RerankResponse.model_validate_json(response.content)
    try:
        err = response.json()["error"]
        raise RerankClientError(response.status_code, str(err["type"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        raise RerankClientError(response.status_code, "http_error", response.text[:200]) from None


class RerankClient:
    """Blocking client. ``timeout`` is httpx's per-request timeout in seconds (connect/read/write/pool)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None):
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport)

    def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None,
               return_documents: bool = False, timeout_ms: float | None = None) -> RerankResponse:
        """POST /v1/rerank. ``timeout_ms`` is sent as the server-side deadline header (504 when missed)."""
        body = _payload(query, documents, top_n, return_documents)
        headers = _headers(self.api_key, timeout_ms)
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = self._http.post("/v1/rerank", json=body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise RerankClientError(0, "connection_error", f"{type(exc).__name__}: {exc}") from exc
                time.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code == 503 and not last:
                time.sleep(self.retry.delay(attempt, response.headers.get("Retry-After")))
                continue
            return _parse(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def ready(self) -> bool:
        try:
            return self._http.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRerankClient:
    """asyncio client with the same semantics as :class:`RerankClient`."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 100):
        self.api_key = api_key
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, transport=transport,
                                       limits=httpx.Limits(max_connections=max_connections))

    async def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None,
                     return_documents: bool = False, timeout_ms: float | None = None) -> RerankResponse:
        body = _payload(query, documents, top_n, return_documents)
        headers = _headers(self.api_key, timeout_ms)
        for attempt in range(self.retry.retries + 1):
            last = attempt == self.retry.retries
            try:
                response = await self._http.post("/v1/rerank", json=body, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise RerankClientError(0, "connection_error", f"{type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code == 503 and not last:
                await asyncio.sleep(self.retry.delay(attempt, response.headers.get("Retry-After")))
                continue
            return _parse(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRerankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
