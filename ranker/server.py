"""FastAPI app factory for the rerank service (see :mod:`ranker.protocol` for the wire format).

Endpoints: ``POST /v1/rerank`` (Cohere), ``POST /rerank`` (TEI), ``GET /health``, ``/ready``,
``/info``, ``/metrics``. Inference runs in the batcher's worker thread, never on the event loop.
With ``api_key`` set, the rerank endpoints and ``/info`` require ``Authorization: Bearer <key>``;
health, readiness and metrics stay open for probes and scrapers.

Order of checks for a request (see :mod:`ranker._http_guard`): auth (401, body unread) ->
``Content-Length`` against ``max_body_bytes`` (413) -> body read with a stall timeout (408) -> JSON and
schema (400/422) -> limits (413) -> admission by the batcher (503 + Retry-After) -> scoring, or 504
when the deadline passes first. Every 4xx/5xx body is :class:`~ranker.protocol.ErrorResponse`, and
every response is counted in ``distilrank_requests_total{endpoint,status}``.

Timeouts (defaults): request line + headers 10 s from connection open (408, connection closed);
each read of the body 10 s (408); keep-alive idle 5 s; graceful shutdown 30 s (requests still running
then are answered 503 ``shutting_down`` and logged as dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ranker._cache import ScoreCache
from ranker._http_guard import GuardSettings, InFlight, RequestGuard
from ranker._transport import DrainingServer, header_timeout_protocol
from ranker.batcher import (
    AdmissionError,
    DeadlineExceededError,
    MicroBatcher,
    OverloadedError,
    ScoringError,
    ShuttingDownError,
)
from ranker.config import ServerConfig, resolve_scores
from ranker.metrics import RankerMetrics
from ranker.protocol import (
    DEADLINE_HEADER,
    ApiError,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    ReadyResponse,
    RerankMeta,
    RerankRequest,
    RerankResponse,
    RerankResult,
    ReturnedDocument,
    TEIRerankRequest,
    TEIRerankResult,
)
from ranker.runtime import RerankRuntime, sigmoid

__all__ = ["ServerConfig", "create_app", "make_server"]

logger = logging.getLogger(__name__)


# module level: annotations are strings (PEP 563) and FastAPI resolves them in module globals.
# It only documents the scheme in OpenAPI: the token is checked by the guard, before the body is read.
_BEARER = HTTPBearer(auto_error=False, description="Needed only when the server runs with --api-key")


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc} for code, desc in {
        400: "Malformed JSON or header", 401: "Missing or wrong bearer token (when auth is on)",
        408: "The request body stalled", 413: "Body over max_body_bytes, too many documents or a text longer than max_chars",
        422: "Invalid request fields (invalid Unicode included)",
        500: "Scoring this request failed (only this request: batch-mates are retried on their own)",
        503: "Queue full, expected wait beyond the deadline, or shutting down; retry after Retry-After seconds",
        504: f"The {DEADLINE_HEADER} deadline passed before the request was scored"}.items()}


def _deadline(request: Request, default_ms: float | None) -> float | None:
    """The request's deadline as a ``time.monotonic()`` instant, counted from its arrival at the server."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        ms = default_ms
    else:
        try:
            ms = float(raw)
        except ValueError:
            ms = -1.0
        if not 0 < ms < float("inf"):
            raise ApiError(400, "invalid_header", f"{DEADLINE_HEADER}={raw!r}: give a positive number of milliseconds")
    if ms is None:
        return None
    arrived = request.scope.get("state", {}).get("arrived", time.monotonic())
    return float(arrived) + ms / 1000


def create_app(runtime: RerankRuntime, config: ServerConfig | None = None) -> FastAPI:
    """Build the app around an already loaded (checksum-verified) runtime. The batcher starts in the
    lifespan (after a warm-up) and is drained on shutdown; the log says how many requests in flight
    were finished and how many the graceful timeout cut off."""
    config = config or ServerConfig()
    metrics = RankerMetrics()
    cache = ScoreCache(runtime.model_sha256, config.cache_size) if config.cache_size else None
    inflight = InFlight()
    state: dict[str, Any] = {"batcher": None, "ready": False, "draining": False, "in_flight_at_drain": 0}
    scores_mode = resolve_scores(config.scores, runtime.card)
    score_name: Literal["sigmoid", "raw_logit"] = "sigmoid" if scores_mode == "sigmoid" else "raw_logit"

    def begin_drain() -> None:
        """Called when SIGTERM/SIGINT starts the graceful shutdown: not ready, no new work."""
        state["draining"] = True
        state["ready"] = False
        state["in_flight_at_drain"] = inflight.now
        logger.info("draining: %d request(s) in flight, up to %g s to finish them", inflight.now,
                    config.graceful_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.warmup and not getattr(runtime, "warmed", False):
            runtime.warmup()
        batcher = MicroBatcher(
            runtime, config.batcher_config(), on_batch=metrics.observe_batch, on_queue_depth=metrics.observe_queue)
        state["batcher"] = batcher
        metrics.service_rate.set_function(lambda: batcher.service_rate)
        state["ready"] = True
        logger.info("ranker ready: %s", runtime.name)
        try:
            yield
        finally:
            state["ready"] = False
            # uvicorn gets here after every request finished or after it cancelled the rest at the graceful
            # timeout; let the cancelled ones answer their 503 before counting
            for _ in range(20):
                if not inflight.now:
                    break
                await asyncio.sleep(0.01)
            drained = await asyncio.get_running_loop().run_in_executor(None, batcher.close, config.graceful_timeout_s)
            dropped = inflight.dropped + inflight.now
            metrics.dropped_at_shutdown.inc(dropped)
            at_drain = state["in_flight_at_drain"]
            if dropped or not drained:
                logger.warning("ranker stopped: %d request(s) were still in flight when the %g s graceful timeout hit "
                               "and were dropped (answered 503 shutting_down where the connection was open); %d of "
                               "%d in flight at shutdown were finished", dropped, config.graceful_timeout_s,
                               max(at_drain - dropped, 0), at_drain)
            else:
                logger.info("ranker stopped; queued requests were finished (%d in flight at shutdown, none dropped)",
                            at_drain)

    app = FastAPI(title="distilrank ranker", version="1", lifespan=lifespan,
                  description="Cross-encoder reranking: Cohere-compatible /v1/rerank and TEI-compatible /rerank.")
    app.add_middleware(RequestGuard, metrics=metrics, inflight=inflight, settings=GuardSettings(
        api_key=config.api_key, max_body_bytes=config.body_limit(), body_timeout_s=config.body_timeout_s))

    def error_response(exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.type).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # routing (404, 405) and body-parse failures (400) from FastAPI itself: same error schema
        kinds = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail)
        if exc.status_code == 400:
            message = "the body could not be parsed (not UTF-8 JSON?): send a JSON object with Content-Type: application/json"
        elif exc.status_code == 404:
            message = f"no endpoint {request.url.path}; see /openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /openapi.json"
        return error_response(ApiError(exc.status_code, kinds.get(exc.status_code, "http_error"), message,
                                       headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(ApiError(400, "invalid_json", "the body is not valid JSON: send a JSON object with "
                                           "Content-Type: application/json"))
        parts = []
        for e in errors[:5]:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            msg = str(e.get("msg", "invalid"))
            if e.get("type") == "extra_forbidden":
                msg = "unknown field; remove it (see /openapi.json for the accepted fields)"
            parts.append(f"{loc}: {msg}")
        return error_response(ApiError(422, "invalid_request", "; ".join(parts)))

    def check_limits(query: str, texts: list[str]) -> None:
        if len(texts) > config.max_docs:
            raise ApiError(413, "too_many_documents", f"{len(texts)} documents > max_docs={config.max_docs}; split the "
                           "request into several or restart the server with a larger --max-docs")
        if len(query) > config.max_chars:
            raise ApiError(413, "text_too_long", f"query has {len(query)} characters > max_chars={config.max_chars}; "
                           "shorten it (texts are truncated to the model's max_seq_len tokens anyway)")
        for i, t in enumerate(texts):
            if len(t) > config.max_chars:
                raise ApiError(413, "text_too_long", f"document {i} has {len(t)} characters > max_chars={config.max_chars}; "
                               "cut it client-side (only the first max_seq_len tokens are scored anyway)")

    async def logits_for(request: Request, query: str, texts: list[str]) -> tuple[np.ndarray, int]:
        deadline = _deadline(request, config.default_deadline_ms)
        batcher: MicroBatcher | None = state["batcher"]
        if state["draining"]:
            raise ApiError(503, "shutting_down", "the server is stopping; retry on another replica",
                           headers={"Retry-After": "1", "Connection": "close"})
        if batcher is None or not state["ready"]:
            raise ApiError(503, "not_ready", "the model is loading or the server is stopping; retry shortly",
                           headers={"Retry-After": "1"})
        out = np.empty(len(texts), dtype=np.float32)
        missing = list(range(len(texts)))
        keys: list[tuple[str, str, str]] = []
        if cache is not None:
            keys = [cache.key(query, t) for t in texts]
            missing = []
            for i, k in enumerate(keys):
                hit = cache.get(k)
                if hit is None:
                    missing.append(i)
                else:
                    out[i] = hit
            metrics.observe_cache(len(texts) - len(missing), len(missing))
        if missing:
            try:
                scores = await batcher.submit(query, [texts[i] for i in missing], deadline)
            except AdmissionError as exc:
                retry = str(max(1, int(np.ceil(exc.retry_after_s))))
                if isinstance(exc, OverloadedError):
                    raise ApiError(503, "overloaded", f"the deadline cannot be met: {exc}; retry after {retry} s, "
                                   "on another replica, or with a longer deadline", headers={"Retry-After": retry}) from exc
                raise ApiError(503, "queue_full", f"the server is at capacity ({exc}); retry after {retry} s or send "
                               "fewer documents", headers={"Retry-After": retry}) from exc
            except DeadlineExceededError as exc:
                raise ApiError(504, "deadline_exceeded", f"{exc}; raise {DEADLINE_HEADER} or retry later") from exc
            except ShuttingDownError as exc:
                raise ApiError(503, "shutting_down", "the server is stopping; retry on another replica",
                               headers={"Retry-After": "1"}) from exc
            except ScoringError as exc:
                raise ApiError(500, "scoring_failed", f"{exc}; the other requests of its batch were answered. "
                               "The server log has the traceback") from exc
            out[missing] = scores
            if cache is not None:
                for i, s in zip(missing, scores, strict=True):
                    cache.put(keys[i], float(s))
        return out, len(texts) - len(missing)

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
              responses=_ERROR_RESPONSES, dependencies=[Depends(_BEARER)], tags=["rerank"],
              summary="Cohere-compatible rerank")
    async def rerank_cohere(body: RerankRequest, request: Request) -> RerankResponse:
        texts = body.texts()
        check_limits(body.query, texts)
        logits, cached = await logits_for(request, body.query, texts)
        scores = sigmoid(logits) if scores_mode == "sigmoid" else logits.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[: body.top_n]
        results = [RerankResult(index=int(i), relevance_score=float(scores[i]),
                                document=ReturnedDocument(text=texts[i]) if body.return_documents else None)
                   for i in order]
        return RerankResponse(id=str(uuid.uuid4()), results=results,
                              meta=RerankMeta(model=runtime.name, score=score_name, cached=cached))

    @app.post("/rerank", response_model=list[TEIRerankResult], response_model_exclude_none=True,
              responses=_ERROR_RESPONSES, dependencies=[Depends(_BEARER)], tags=["rerank"],
              summary="TEI-compatible rerank")
    async def rerank_tei(body: TEIRerankRequest, request: Request) -> list[TEIRerankResult]:
        check_limits(body.query, body.texts)
        logits, _ = await logits_for(request, body.query, body.texts)
        scores = logits.astype(np.float64) if body.raw_scores else sigmoid(logits)
        order = np.argsort(-scores, kind="stable")
        return [TEIRerankResult(index=int(i), score=float(scores[i]), text=body.texts[i] if body.return_text else None)
                for i in order]

    @app.get("/health", response_model=HealthResponse, tags=["ops"])
    async def health() -> HealthResponse:
        return HealthResponse()

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}}, tags=["ops"])
    async def ready() -> Response:
        if state["ready"]:
            return JSONResponse(ReadyResponse(ready=True).model_dump())
        reason = "draining for shutdown" if state["draining"] else "model not loaded or warmed yet"
        return JSONResponse(ReadyResponse(ready=False, reason=reason).model_dump(), status_code=503)

    @app.get("/info", response_model=InfoResponse, dependencies=[Depends(_BEARER)], responses={401: _ERROR_RESPONSES[401]},
             tags=["ops"])
    async def info() -> InfoResponse:
        card = runtime.card
        interp = card.interpolation.to_dict() if card.interpolation else None
        return InfoResponse(model=runtime.name, onnx_file=card.onnx_file, precision=card.precision,
                            runtime=card.runtime, max_seq_len=runtime.max_seq_len, token_caps=card.token_caps.to_dict(),
                            pairs_per_call=card.pairs_per_call, model_sha256=runtime.model_sha256,
                            card_sha256=runtime.card_sha256, providers=runtime.providers,
                            sessions=getattr(runtime, "n_sessions", 1), score=score_name, interpolation=interp,
                            limits=config.limits(),
                            card={"metrics": card.metrics, "gates": card.gates, "decision": card.decision,
                                  "latency": card.latency, "config_hash": card.config_hash})

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.state.metrics = metrics
    app.state.config = config
    app.state.runtime = runtime
    app.state.begin_drain = begin_drain
    app.state.inflight = inflight
    return app


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **uvicorn_options: Any) -> uvicorn.Server:
    """A uvicorn server for an app from :func:`create_app`, with the app's header timeout and graceful
    timeout, and draining wired to the app (``/ready`` turns 503 when SIGTERM arrives)."""
    config: ServerConfig = app.state.config
    metrics: RankerMetrics = app.state.metrics

    def on_protocol_error(status: int, type_: str) -> None:  # answered below the app: no path is known
        metrics.errors.labels(type_).inc()
        metrics.requests.labels("other", str(status)).inc()

    options: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": "on", "timeout_keep_alive": 5,
                               "timeout_graceful_shutdown": config.graceful_timeout_s}
    options.update(uvicorn_options)
    ucfg = uvicorn.Config(app, host=host, port=port, http=header_timeout_protocol(config.header_timeout_s, on_protocol_error),
                          **options)
    return DrainingServer(ucfg, on_drain=app.state.begin_drain)
