"""FastAPI app factory for the rerank service (see :mod:`ranker.protocol` for the wire format).

Endpoints: ``POST /v1/rerank`` (Cohere), ``POST /rerank`` (TEI), ``GET /health``, ``/ready``,
``/info``, ``/metrics``. Inference runs in the batcher's worker thread, never on the event loop.
With ``api_key`` set, the rerank endpoints and ``/info`` require ``Authorization: Bearer <key>``;
health, readiness and metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from distill.errors import ConfigError
from ranker._cache import ScoreCache
from ranker.batcher import (
    BatcherConfig,
    DeadlineExceededError,
    MicroBatcher,
    QueueFullError,
    ShuttingDownError,
)
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

__all__ = ["ServerConfig", "create_app"]

logger = logging.getLogger(__name__)

ScoreMode = Literal["sigmoid", "raw"]

# module level: annotations are strings (PEP 563) and FastAPI resolves them in module globals
_BEARER = HTTPBearer(auto_error=False, description="Needed only when the server runs with --api-key")


@dataclass(frozen=True)
class ServerConfig:
    """Limits are per request: ``max_docs`` documents, ``max_chars`` characters per text (query
    included). ``max_queue`` bounds queued pairs (>= max_docs so one full request always fits).
    ``cache_size`` 0 disables the score cache."""

    max_batch_pairs: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    max_docs: int = 1000
    max_chars: int = 20_000
    api_key: str | None = None
    cache_size: int = 0
    scores: ScoreMode = "sigmoid"
    warmup: bool = True

    def __post_init__(self) -> None:
        if self.max_docs < 1:
            raise ConfigError(f"max_docs={self.max_docs}: must be >= 1")
        if self.max_chars < 1:
            raise ConfigError(f"max_chars={self.max_chars}: must be >= 1")
        if self.max_queue < self.max_docs:
            raise ConfigError(f"max_queue={self.max_queue} < max_docs={self.max_docs}: the queue must hold one full "
                              "request; raise --max-queue or lower --max-docs")
        if self.cache_size < 0:
            raise ConfigError(f"cache_size={self.cache_size}: use 0 (off) or a positive number of scores")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key is empty; unset it to disable auth or give a non-empty token")
        if self.scores not in ("sigmoid", "raw"):
            raise ConfigError(f"scores={self.scores!r}: choose sigmoid or raw")
        BatcherConfig(self.max_batch_pairs, self.max_wait_ms, self.max_queue)  # validates those three

    def limits(self) -> dict[str, int | float | bool]:
        d = asdict(self)
        return {k: d[k] for k in ("max_batch_pairs", "max_wait_ms", "max_queue", "max_docs", "max_chars", "cache_size")} | {
            "auth": self.api_key is not None}


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc} for code, desc in {
        400: "Malformed JSON", 401: "Missing or wrong bearer token (when auth is on)",
        413: "Too many documents or a text longer than max_chars", 422: "Invalid request fields",
        503: "Queue full or shutting down; retry after Retry-After seconds",
        504: f"The {DEADLINE_HEADER} deadline cannot be met"}.items()}


def _deadline(request: Request) -> float | None:
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms > 0:
        raise ApiError(400, "invalid_header", f"{DEADLINE_HEADER}={raw!r}: give a positive number of milliseconds")
    return time.monotonic() + ms / 1000


def create_app(runtime: RerankRuntime, config: ServerConfig | None = None) -> FastAPI:
    """Build the app around an already loaded (checksum-verified) runtime. The batcher starts in the
    lifespan (after a warm-up) and is drained on shutdown, so in-flight requests finish."""
    config = config or ServerConfig()
    metrics = RankerMetrics()
    cache = ScoreCache(runtime.model_sha256, config.cache_size) if config.cache_size else None
    state: dict[str, Any] = {"batcher": None, "ready": False}
    score_name: Literal["sigmoid", "raw_logit"] = "sigmoid" if config.scores == "sigmoid" else "raw_logit"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.warmup and not getattr(runtime, "warmed", False):
            runtime.warmup()
        state["batcher"] = MicroBatcher(
            runtime, BatcherConfig(config.max_batch_pairs, config.max_wait_ms, config.max_queue),
            on_batch=metrics.observe_batch, on_queue_depth=metrics.queue_depth.set)
        state["ready"] = True
        logger.info("ranker ready: %s", runtime.name)
        try:
            yield
        finally:
            state["ready"] = False
            state["batcher"].close()
            logger.info("ranker stopped; queued requests were finished")

    app = FastAPI(title="distilrank ranker", version="1", lifespan=lifespan,
                  description="Cross-encoder reranking: Cohere-compatible /v1/rerank and TEI-compatible /rerank.")
    def check_auth(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if config.api_key is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), config.api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token: send 'Authorization: Bearer <key>' "
                           "with the key the server was started with", headers={"WWW-Authenticate": "Bearer"})

    def error_response(exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.type).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

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
        deadline = _deadline(request)
        batcher: MicroBatcher | None = state["batcher"]
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
            except QueueFullError as exc:
                retry = max(1, int(np.ceil(exc.retry_after_s)))
                raise ApiError(503, "queue_full", f"the server is at capacity ({exc.pending} pairs queued); retry after "
                               f"{retry} s or send fewer documents", headers={"Retry-After": str(retry)}) from exc
            except DeadlineExceededError as exc:
                raise ApiError(504, "deadline_exceeded", f"{exc}; raise {DEADLINE_HEADER} or retry later") from exc
            except ShuttingDownError as exc:
                raise ApiError(503, "shutting_down", "the server is stopping; retry on another replica",
                               headers={"Retry-After": "1"}) from exc
            out[missing] = scores
            if cache is not None:
                for i, s in zip(missing, scores, strict=True):
                    cache.put(keys[i], float(s))
        return out, len(texts) - len(missing)

    @app.middleware("http")
    async def _observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        response = await call_next(request)
        path = request.url.path
        if path in ("/v1/rerank", "/rerank"):
            metrics.request_latency.labels(path).observe(time.perf_counter() - t0)
            metrics.requests.labels(path, str(response.status_code)).inc()
        return response

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
              responses=_ERROR_RESPONSES, dependencies=[Depends(check_auth)], tags=["rerank"],
              summary="Cohere-compatible rerank")
    async def rerank_cohere(body: RerankRequest, request: Request) -> RerankResponse:
        texts = body.texts()
        check_limits(body.query, texts)
        logits, cached = await logits_for(request, body.query, texts)
        scores = sigmoid(logits) if config.scores == "sigmoid" else logits.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[: body.top_n]
        results = [RerankResult(index=int(i), relevance_score=float(scores[i]),
                                document=ReturnedDocument(text=texts[i]) if body.return_documents else None)
                   for i in order]
        return RerankResponse(id=str(uuid.uuid4()), results=results,
                              meta=RerankMeta(model=runtime.name, score=score_name, cached=cached))

    @app.post("/rerank", response_model=list[TEIRerankResult], response_model_exclude_none=True,
              responses=_ERROR_RESPONSES, dependencies=[Depends(check_auth)], tags=["rerank"],
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
        return JSONResponse(ReadyResponse(ready=False, reason="model not loaded or warmed yet").model_dump(), status_code=503)

    @app.get("/info", response_model=InfoResponse, dependencies=[Depends(check_auth)], responses={401: _ERROR_RESPONSES[401]},
             tags=["ops"])
    async def info() -> InfoResponse:
        card = runtime.card
        return InfoResponse(model=runtime.name, onnx_file=card["onnx_file"], precision=str(card.get("precision", "unknown")),
                            max_seq_len=runtime.max_seq_len, model_sha256=runtime.model_sha256,
                            providers=runtime.providers, score=score_name, limits=config.limits(),
                            card={k: card[k] for k in ("metrics", "gates", "decision", "latency", "config_hash") if k in card})

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.state.metrics = metrics
    app.state.config = config
    app.state.runtime = runtime
    return app
