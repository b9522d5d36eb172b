"""The rerank service without HTTP: scoring, the score cache, readiness and draining, and error mapping.

:class:`RerankService` is what the routes of :mod:`ranker.server` call; every decision about a request that
is not HTTP framing (limits, deadlines, admission, the cache, non-finite scores, the answer's shape) is made
here, so it is tested by calling the service directly. It raises :class:`~ranker.protocol.ApiError` for every
refusal; the app renders it as the JSON error schema.

Lifecycle: :meth:`RerankService.start` (warm-up unless done, then the batcher), :meth:`begin_drain` when
SIGTERM arrives (not ready, new requests get 503), :meth:`stop` (finish what is queued within the graceful
timeout, log what was dropped).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from distill.core.errors import ConfigError
from distill.core.model_card import ModelCard
from distill.core.params import finite_float
from ranker._cache import ScoreCache
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
from ranker.runtime import NonFiniteScoreError, sigmoid

__all__ = ["MAX_DEADLINE_MS", "InFlight", "RerankService", "ServedModel", "http_error", "validation_error"]

logger = logging.getLogger(__name__)

#: the longest deadline a request may ask for (one day): beyond it a deadline is a mistake, not a budget
MAX_DEADLINE_MS = 86_400_000.0


class ServedModel(Protocol):
    """What the service needs of a runtime (:class:`~ranker.runtime.RerankRuntime`, or a stand-in in tests)."""

    card: ModelCard
    model_sha256: str
    card_sha256: str
    max_seq_len: int
    warmed: bool

    @property
    def name(self) -> str: ...

    @property
    def providers(self) -> list[str]: ...

    def warmup(self) -> None: ...

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray: ...


class InFlight:
    """Requests being handled now, and those cut off by the shutdown timeout (answered 503)."""

    def __init__(self) -> None:
        self.now = 0
        self.dropped = 0


@dataclass
class _Scored:
    logits: np.ndarray
    cached: int


class RerankService:
    """One served model behind the rerank APIs. Not thread-safe: call it from the event loop."""

    def __init__(self, runtime: ServedModel, config: ServerConfig | None = None,
                 metrics: RankerMetrics | None = None):
        self.runtime = runtime
        self.config = config or ServerConfig()
        self.metrics = metrics or RankerMetrics()
        self.inflight = InFlight()
        self.cache = ScoreCache(runtime.model_sha256, self.config.cache_size) if self.config.cache_size else None
        self.scores_mode = resolve_scores(self.config.scores, runtime.card)
        self.score_name: Literal["sigmoid", "raw_logit"] = "sigmoid" if self.scores_mode == "sigmoid" else "raw_logit"
        self.batcher: MicroBatcher | None = None
        self.ready = False
        self.draining = False
        self._in_flight_at_drain = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Warm the model up (unless the CLI already did) and start the batcher; the service is then ready."""
        if self.config.warmup and not getattr(self.runtime, "warmed", False):
            self.runtime.warmup()
        m = self.metrics
        self.batcher = MicroBatcher(self.runtime, self.config.batcher_config(), on_batch=m.observe_batch,
                                    on_queue_depth=m.observe_queue)
        batcher = self.batcher
        m.service_rate.set_function(lambda: batcher.service_rate)
        self.ready = True
        logger.info("ranker ready: %s", self.runtime.name)

    def begin_drain(self) -> None:
        """SIGTERM/SIGINT started the graceful shutdown: not ready, no new work."""
        self.draining = True
        self.ready = False
        self._in_flight_at_drain = self.inflight.now
        logger.info("draining: %d request(s) in flight, up to %g s to finish them", self.inflight.now,
                    self.config.graceful_timeout_s)

    async def stop(self) -> None:
        """Finish the queued work (within the graceful timeout) and log what was finished and what was dropped."""
        self.ready = False
        # uvicorn gets here after every request finished or after it cancelled the rest at the graceful
        # timeout; let the cancelled ones answer their 503 before counting
        for _ in range(20):
            if not self.inflight.now:
                break
            await asyncio.sleep(0.01)
        drained = True
        if self.batcher is not None:
            drained = await asyncio.get_running_loop().run_in_executor(None, self.batcher.close,
                                                                       self.config.graceful_timeout_s)
        dropped = self.inflight.dropped + self.inflight.now
        self.metrics.dropped_at_shutdown.inc(dropped)
        at_drain = self._in_flight_at_drain
        if dropped or not drained:
            logger.warning("ranker stopped: %d request(s) were still in flight when the %g s graceful timeout hit "
                           "and were dropped (answered 503 shutting_down where the connection was open); %d of "
                           "%d in flight at shutdown were finished", dropped, self.config.graceful_timeout_s,
                           max(at_drain - dropped, 0), at_drain)
        else:
            logger.info("ranker stopped; queued requests were finished (%d in flight at shutdown, none dropped)",
                        at_drain)

    def readiness(self) -> tuple[int, ReadyResponse]:
        """``/ready``: 200 when serving, else 503 with the reason."""
        if self.ready:
            return 200, ReadyResponse(ready=True)
        reason = "draining for shutdown" if self.draining else "model not loaded or warmed yet"
        return 503, ReadyResponse(ready=False, reason=reason)

    # -- the rerank APIs -------------------------------------------------------------------------------------

    async def rerank(self, body: RerankRequest, deadline: float | None = None) -> RerankResponse:
        """Cohere ``/v1/rerank``. ``deadline``: a ``time.monotonic()`` instant (see :meth:`deadline`)."""
        texts = body.texts()
        scored = await self.logits(body.query, texts, deadline)
        scores = sigmoid(scored.logits) if self.scores_mode == "sigmoid" else scored.logits.astype(np.float64)
        order = np.argsort(-scores, kind="stable")[: body.top_n]
        results = [RerankResult(index=int(i), relevance_score=float(scores[i]),
                                document=ReturnedDocument(text=texts[i]) if body.return_documents else None)
                   for i in order]
        return RerankResponse(id=str(uuid.uuid4()), results=results,
                              meta=RerankMeta(model=self.runtime.name, score=self.score_name, cached=scored.cached))

    async def rerank_tei(self, body: TEIRerankRequest, deadline: float | None = None) -> list[TEIRerankResult]:
        """TEI ``/rerank``: sigmoid scores unless the request asks for raw ones."""
        scored = await self.logits(body.query, body.texts, deadline)
        scores = scored.logits.astype(np.float64) if body.raw_scores else sigmoid(scored.logits)
        order = np.argsort(-scores, kind="stable")
        return [TEIRerankResult(index=int(i), score=float(scores[i]), text=body.texts[i] if body.return_text else None)
                for i in order]

    async def logits(self, query: str, texts: list[str], deadline: float | None) -> _Scored:
        """Raw logits for ``texts`` against ``query`` (cache first, then the batcher), in order.

        Raises ApiError: 413 over a limit, 503 not ready / shutting down / overloaded, 504 deadline, 500 when
        scoring fails or the model answers NaN or infinity (never served as a score)."""
        self.check_limits(query, texts)
        batcher = self._accepting()
        out = np.empty(len(texts), dtype=np.float32)
        keys, missing = self._from_cache(query, texts, out)
        if missing:
            try:
                scores = await batcher.submit(query, [texts[i] for i in missing], deadline)
            except Exception as exc:
                raise self.api_error(exc) from exc
            _check_finite(scores)
            out[missing] = scores
            if self.cache is not None:
                for i, s in zip(missing, scores, strict=True):
                    self.cache.put(keys[i], float(s))
        return _Scored(out, len(texts) - len(missing))

    def check_limits(self, query: str, texts: Sequence[str]) -> None:
        """413 for more than ``max_docs`` texts or a text over ``max_chars`` characters."""
        cfg = self.config
        if len(texts) > cfg.max_docs:
            raise ApiError(413, "too_many_documents", f"{len(texts)} documents > max_docs={cfg.max_docs}; split the "
                           "request into several or restart the server with a larger --max-docs")
        if len(query) > cfg.max_chars:
            raise ApiError(413, "text_too_long", f"query has {len(query)} characters > max_chars={cfg.max_chars}; "
                           "shorten it (texts are truncated to the model's max_seq_len tokens anyway)")
        for i, t in enumerate(texts):
            if len(t) > cfg.max_chars:
                raise ApiError(413, "text_too_long", f"document {i} has {len(t)} characters > max_chars="
                               f"{cfg.max_chars}; cut it client-side (only the first max_seq_len tokens are scored "
                               "anyway)")

    def deadline(self, header: str | None, arrived: float) -> float | None:
        """The request's deadline as a ``time.monotonic()`` instant, counted from ``arrived``: the deadline header
        (milliseconds, finite, at most a day) or the server's ``default_deadline_ms``; None for no deadline."""
        ms = self.config.default_deadline_ms
        if header is not None:
            try:
                ms = finite_float(DEADLINE_HEADER, header, 0, MAX_DEADLINE_MS, min_open=True)
            except ConfigError:
                raise ApiError(400, "invalid_header", f"{DEADLINE_HEADER}={_clip(header)!r}: give a positive number "
                               f"of milliseconds, at most {MAX_DEADLINE_MS:.0f}") from None
        return None if ms is None else arrived + ms / 1000

    def info(self) -> InfoResponse:
        rt, card = self.runtime, self.runtime.card
        return InfoResponse(
            model=rt.name, onnx_file=card.onnx_file, precision=card.precision, runtime=card.runtime,
            max_seq_len=rt.max_seq_len, token_caps=card.token_caps.to_dict(), pairs_per_call=card.pairs_per_call,
            model_sha256=rt.model_sha256, card_sha256=rt.card_sha256, providers=rt.providers,
            sessions=getattr(rt, "n_sessions", 1), score=self.score_name,
            interpolation=card.interpolation.to_dict() if card.interpolation else None, limits=self.config.limits(),
            card={"metrics": card.metrics, "gates": card.gates, "decision": card.decision, "latency": card.latency,
                  "config_hash": card.config_hash},
            warnings=list(getattr(rt, "warnings", [])))

    # -- error mapping ---------------------------------------------------------------------------------------

    @staticmethod
    def api_error(exc: BaseException) -> ApiError:
        """The HTTP answer for an exception of the batcher or the scorer (anything else is a bug: re-raised)."""
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, AdmissionError):
            retry = str(max(1, int(np.ceil(exc.retry_after_s))))
            if isinstance(exc, OverloadedError):
                return ApiError(503, "overloaded", f"the deadline cannot be met: {exc}; retry after {retry} s, on "
                                "another replica, or with a longer deadline", headers={"Retry-After": retry})
            return ApiError(503, "queue_full", f"the server is at capacity ({exc}); retry after {retry} s or send "
                            "fewer documents", headers={"Retry-After": retry})
        if isinstance(exc, DeadlineExceededError):
            return ApiError(504, "deadline_exceeded", f"{exc}; raise {DEADLINE_HEADER} or retry later")
        if isinstance(exc, ShuttingDownError):
            return ApiError(503, "shutting_down", "the server is stopping; retry on another replica",
                            headers={"Retry-After": "1"})
        if isinstance(exc, ScoringError):
            return ApiError(500, "scoring_failed", f"{exc}; the other requests of its batch were answered. The "
                            "server log has the traceback")
        raise exc

    def _accepting(self) -> MicroBatcher:
        if self.draining:
            raise ApiError(503, "shutting_down", "the server is stopping; retry on another replica",
                           headers={"Retry-After": "1", "Connection": "close"})
        if self.batcher is None or not self.ready:
            raise ApiError(503, "not_ready", "the model is loading or the server is stopping; retry shortly",
                           headers={"Retry-After": "1"})
        return self.batcher

    def _from_cache(self, query: str, texts: list[str], out: np.ndarray) -> tuple[list[Any], list[int]]:
        """Fill ``out`` from the cache; returns the cache keys and the indexes still to score."""
        if self.cache is None:
            return [], list(range(len(texts)))
        keys = [self.cache.key(query, t) for t in texts]
        missing = []
        for i, k in enumerate(keys):
            hit = self.cache.get(k)
            if hit is None:
                missing.append(i)
            else:
                out[i] = hit
        self.metrics.observe_cache(len(texts) - len(missing), len(missing))
        return keys, missing


def _check_finite(scores: np.ndarray) -> None:
    """A NaN or infinite logit is a broken model or input, never a score (JSON has no NaN: it would be null)."""
    bad = int(np.count_nonzero(~np.isfinite(scores)))
    if bad:
        raise ApiError(500, "scoring_failed", f"{NonFiniteScoreError.describe(bad, len(scores))}; the server log has "
                       "the details")



#: how much of a field name or header value an error message repeats (a 200 KB field name is not echoed back)
_ECHO_CHARS = 64


def _clip(text: str, limit: int = _ECHO_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def validation_error(errors: Sequence[Any]) -> ApiError:
    """The answer for a body that failed the schema (pydantic's ``errors()``): 400 for JSON that does not parse,
    else 422 naming up to five fields (each name cut to 64 characters)."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return ApiError(400, "invalid_json", "the body is not valid JSON: send a JSON object with "
                        "Content-Type: application/json")
    parts = []
    for e in errors[:5]:
        loc = ".".join(_clip(str(p)) for p in e.get("loc", ()) if p != "body") or "body"
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "extra_forbidden":
            msg = "unknown field; remove it (see /openapi.json for the accepted fields)"
        parts.append(f"{loc}: {_clip(msg, 400)}")
    return ApiError(422, "invalid_request", "; ".join(parts))


def http_error(status: int, method: str, path: str, detail: str, headers: dict[str, str] | None = None) -> ApiError:
    """Routing and body-parse failures of the framework itself (400, 404, 405, ...) in the error schema."""
    where = _clip(path)
    messages = {
        400: ("invalid_body", "the body could not be parsed (not UTF-8 JSON?): send a JSON object with "
                              "Content-Type: application/json"),
        404: ("not_found", f"no endpoint {where}; see /openapi.json"),
        405: ("method_not_allowed", f"{_clip(method)} is not allowed on {where}; see /openapi.json"),
    }
    type_, message = messages.get(status, ("http_error", _clip(detail, 400)))
    return ApiError(status, type_, message, headers=headers)
