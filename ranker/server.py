"""FastAPI app factory for the rerank service (see :mod:`ranker.protocol` for the wire format).

Endpoints: ``POST /v1/rerank`` (Cohere), ``POST /rerank`` (TEI), ``GET /health``, ``/ready``,
``/info``, ``/metrics`` (``HEAD`` on each GET endpoint too). Inference runs in the batcher's worker thread,
never on the event loop. With ``api_key`` set, the rerank endpoints and ``/info`` require
``Authorization: Bearer <key>``; health, readiness and metrics stay open for probes and scrapers.

The routes are thin: :class:`~ranker.service.RerankService` holds scoring, the cache, readiness, draining and
error mapping. Order of checks for a request (see :mod:`ranker._http_guard`): auth (401, body unread) ->
``Content-Length`` against ``max_body_bytes`` (413) -> body streamed in within the body timeout (408) and scanned
as it arrives (413 at the chunk that passes a document count, bytes-per-document or byte limit;
:mod:`ranker._body_scan`) -> JSON and schema (400/422) -> limits (413) -> admission by the batcher
(503 + Retry-After) -> scoring, or 504 when the deadline passes first. Every 4xx/5xx body (and the 307 of a
trailing slash) is :class:`~ranker.protocol.ErrorResponse`, and every response is counted in
``distilrank_requests_total{endpoint,status}``.

Timeouts (defaults): request line + headers 10 s from connection open (408, connection closed);
the whole body 10 s from the end of the headers (408); keep-alive idle 5 s; graceful shutdown 30 s (requests
still running then are answered 503 ``shutting_down`` and logged as dropped).
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from distill.core.errors import MissingPrerequisiteError
from ranker._body_scan import ScanLimits
from ranker._http_guard import GuardSettings, RequestGuard
from ranker._transport import DrainingServer, header_timeout_protocol
from ranker.config import ServerConfig
from ranker.metrics import RankerMetrics
from ranker.protocol import (
    DEADLINE_HEADER,
    ApiError,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    ReadyResponse,
    RerankRequest,
    RerankResponse,
    TEIRerankRequest,
    TEIRerankResult,
)
from ranker.service import RerankService, ServedModel, http_error, validation_error

__all__ = ["ServerConfig", "bind_socket", "create_app", "make_server"]

# module level: annotations are strings (PEP 563) and FastAPI resolves them in module globals.
# It only documents the scheme in OpenAPI: the token is checked by the guard, before the body is read.
_BEARER = HTTPBearer(auto_error=False, description="Needed only when the server runs with --api-key")
# documented for clients (and the fuzzer); parsed by the service, which answers a bad value 400 invalid_header
_DEADLINE = Header(alias=DEADLINE_HEADER, json_schema_extra={"pattern": r"^[0-9]{1,8}(\.[0-9]+)?$"},
                   description="This request's deadline in milliseconds from its arrival (positive, at most a day); "
                               "503 overloaded at admission or 504 when it cannot be met")


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc} for code, desc in {
        400: "Malformed JSON or header", 401: "Missing or wrong bearer token (when auth is on)",
        408: "The request body did not arrive within the body timeout",
        413: "Body over max_body_bytes, too many documents, or a text over max_chars characters (or its bytes)",
        422: "Invalid request fields (invalid Unicode and values of the wrong JSON type included)",
        500: "Scoring this request failed, or the model answered NaN or infinity (only this request: batch-mates "
             "are retried on their own)",
        503: "Queue full, expected wait beyond the deadline, or shutting down; retry after Retry-After seconds",
        504: f"The {DEADLINE_HEADER} deadline passed before the request was scored"}.items()}


def create_app(runtime: ServedModel, config: ServerConfig | None = None) -> FastAPI:
    """Build the app around an already loaded (checksum-verified) runtime. The service starts its batcher in the
    lifespan (after a warm-up, unless the CLI already ran it) and drains it on shutdown."""
    service = RerankService(runtime, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.stop()

    # no automatic trailing-slash redirect: the 404 handler answers it in the error schema
    app = FastAPI(title="distilrank ranker", version="1", lifespan=lifespan, redirect_slashes=False,
                  description="Cross-encoder reranking: Cohere-compatible /v1/rerank and TEI-compatible /rerank.")
    cfg = service.config
    app.add_middleware(RequestGuard, metrics=service.metrics, inflight=service.inflight, settings=GuardSettings(
        api_key=cfg.api_key, max_body_bytes=cfg.body_limit(), body_timeout_s=cfg.body_timeout_s,
        scans=body_scans(cfg)))
    _add_error_handlers(app, service)
    _add_routes(app, service)
    app.state.service = service
    app.state.metrics = service.metrics
    app.state.config = cfg
    app.state.runtime = runtime
    app.state.begin_drain = service.begin_drain
    app.state.inflight = service.inflight
    return app


def _add_routes(app: FastAPI, service: RerankService) -> None:
    """The HTTP surface: each route hands its parsed body to the service."""

    # the schema requires the bearer token only where the server does (with --api-key)
    auth = [Depends(_BEARER)] if service.config.api_key else []
    responses = {k: v for k, v in _ERROR_RESPONSES.items() if k != 401 or auth}

    def deadline(request: Request, header: str | None) -> float | None:
        arrived = request.scope.get("state", {}).get("arrived", time.monotonic())
        return service.deadline(header, float(arrived))

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
              responses=responses, dependencies=auth, tags=["rerank"],
              summary="Cohere-compatible rerank")
    async def rerank_cohere(body: RerankRequest, request: Request,
                            timeout_ms: Annotated[str | None, _DEADLINE] = None) -> RerankResponse:
        return await service.rerank(body, deadline(request, timeout_ms))

    @app.post("/rerank", response_model=list[TEIRerankResult], response_model_exclude_none=True,
              responses=responses, dependencies=auth, tags=["rerank"],
              summary="TEI-compatible rerank")
    async def rerank_tei(body: TEIRerankRequest, request: Request,
                         timeout_ms: Annotated[str | None, _DEADLINE] = None) -> list[TEIRerankResult]:
        return await service.rerank_tei(body, deadline(request, timeout_ms))

    @app.get("/health", response_model=HealthResponse, tags=["ops"])
    async def health() -> HealthResponse:
        return HealthResponse()

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}, tags=["ops"])
    async def ready() -> Response:
        status, body = service.readiness()
        return JSONResponse(body.model_dump(), status_code=status)

    @app.get("/info", response_model=InfoResponse, dependencies=auth,
             responses={401: _ERROR_RESPONSES[401]} if auth else {}, tags=["ops"])
    async def info() -> InfoResponse:
        return service.info()

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _add_error_handlers(app: FastAPI, service: RerankService) -> None:
    """Every refusal, the framework's own included (404, 405, a trailing slash), in the error schema."""

    def render(exc: ApiError) -> JSONResponse:
        service.metrics.errors.labels(exc.type).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = request.url.path
        if exc.status_code == 404 and path.endswith("/") and path.rstrip("/") in _ROUTES:
            target = path.rstrip("/")
            return render(ApiError(307, "redirect", f"the endpoint is {target}, without the trailing slash; "
                                   "follow Location or drop the slash", headers={"Location": target}))
        return render(http_error(exc.status_code, request.method, path, str(exc.detail), dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_error(exc.errors()))


def body_scans(config: ServerConfig) -> dict[str, ScanLimits]:
    """What the guard checks in each rerank body as it streams in: the list's length and the bytes of each text."""
    per_text = config.max_text_bytes()
    return {"/v1/rerank": ScanLimits("documents", config.max_docs, per_text),
            "/rerank": ScanLimits("texts", config.max_docs, per_text)}


#: the paths the app serves (a trailing slash on one of them is answered 307 to it)
_ROUTES = frozenset({"/v1/rerank", "/rerank", "/health", "/ready", "/info", "/metrics"})


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before the model loads, so a port in use is an error at once
    (MissingPrerequisiteError, exit 3) and never after "ranker ready" was logged."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise MissingPrerequisiteError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = "; stop the other server or pick another --port" if exc.errno == errno.EADDRINUSE else ""
        raise MissingPrerequisiteError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from exc
    sock.set_inheritable(True)
    return sock


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None,
                **uvicorn_options: Any) -> uvicorn.Server:
    """A uvicorn server for an app from :func:`create_app`, with the app's header timeout and graceful
    timeout, and draining wired to the app (``/ready`` turns 503 when SIGTERM arrives). ``sock``: a socket from
    :func:`bind_socket` to serve on (``host`` and ``port`` then only name it in the log)."""
    config: ServerConfig = app.state.config
    metrics: RankerMetrics = app.state.metrics

    def on_protocol_error(status: int, type_: str, scope: dict[str, Any] | None) -> None:
        """Answered below the app: the guard counts the request when the app has it, else it is "other"."""
        metrics.errors.labels(type_).inc()
        if scope is None:
            metrics.requests.labels("other", str(status)).inc()
        else:
            scope.setdefault("state", {})["answered_below"] = status

    options: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": "on", "timeout_keep_alive": 5,
                               "timeout_graceful_shutdown": config.graceful_timeout_s}
    options.update(uvicorn_options)
    protocol = header_timeout_protocol(config.header_timeout_s, on_protocol_error)
    ucfg = uvicorn.Config(app, host=host, port=port, http=protocol, **options)
    return DrainingServer(ucfg, on_drain=app.state.begin_drain, sock=sock)
