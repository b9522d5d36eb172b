"""``distilrank serve``: load and verify an exported model, then serve it with uvicorn."""

from __future__ import annotations

import logging
import os

import click

from distill.core.config import choices, default
from distill.core.errors import ConfigError
from distill.core.params import Count, FiniteFloat
from ranker.config import COUNT_RANGES, DURATION_RANGES, ServerConfig
from ranker.runtime import RuntimeConfig

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def _S(name: str):  # noqa: N802, ANN202
    return default(ServerConfig, name)


def _R(name: str):  # noqa: N802, ANN202
    return default(RuntimeConfig, name)


def _duration(name: str, open_at_zero: bool = True) -> FiniteFloat:
    """The click type of a duration field: finite, in the field's range (nan, inf and 1e999 are exit 2)."""
    low, high = DURATION_RANGES[name]
    return FiniteFloat(low, high, min_open=open_at_zero)


def _count(name: str) -> Count:
    low, high = COUNT_RANGES[name]
    return Count(low, high)


@click.command("serve")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="Exported model directory (with model_card.json) from distilrank export.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address; 0.0.0.0 exposes the service to the network.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--max-batch-pairs", default=_S("max_batch_pairs"), show_default=True, type=_count("max_batch_pairs"),
              help="Most (query, doc) pairs per inference batch, across requests.")
@click.option("--max-batch-tokens", default=_S("max_batch_tokens"), show_default=True, type=_count("max_batch_tokens"),
              help="Most estimated tokens (4 characters each) per inference batch, shared fairly among the requests "
                   "waiting: none waits behind more than one such chunk of another.")
@click.option("--max-wait-ms", default=_S("max_wait_ms"), show_default=True, type=_duration("max_wait_ms", False),
              help="How long a batch waits for more requests after the first arrives.")
@click.option("--max-queue", default=_S("max_queue"), show_default=True, type=_count("max_queue"),
              help="Most pairs waiting; beyond it requests get 503 + Retry-After at once.")
@click.option("--max-queue-requests", default=_S("max_queue_requests"), show_default=True,
              type=_count("max_queue_requests"),
              help="Most requests waiting (whatever their size); beyond it 503 + Retry-After at once.")
@click.option("--default-deadline-ms", default=None, type=_duration("default_deadline_ms"),
              help="Deadline for requests without the X-Request-Timeout-Ms header [default: none, so they are shed "
                   "only by the queue bounds, never by time].")
@click.option("--max-body-bytes", default=None, type=_count("max_body_bytes"),
              help="Largest request body; bigger is 413 before it is read [default: the largest body max-docs texts "
                   "of max-chars characters can take: (max_docs+1) x (6 x max_chars + 1 KiB) + 64 KiB].")
@click.option("--header-timeout", default=_S("header_timeout_s"), show_default=True,
              type=_duration("header_timeout_s"),
              help="Seconds for a client to send the request line and headers (408 and close after).")
@click.option("--body-timeout", default=_S("body_timeout_s"), show_default=True, type=_duration("body_timeout_s"),
              help="Seconds for the whole request body to arrive after the headers (408 after), however it is paced.")
@click.option("--max-docs", default=_S("max_docs"), show_default=True, type=_count("max_docs"),
              help="Most documents per request.")
@click.option("--max-chars", default=_S("max_chars"), show_default=True, type=_count("max_chars"),
              help="Most characters per text; longer is 413 (token truncation happens below this anyway).")
@click.option("--threads", default=None, type=Count(1, 1024),
              help="ONNX Runtime intra-op threads per session [default: auto, see --sessions].")
@click.option("--sessions", default=None, type=Count(1, 1024),
              help="ONNX Runtime sessions over the model, scoring in parallel (each holds a copy of the weights) "
                   "[default: auto: one single-thread session per core (at most 8) when the card scores one pair per "
                   "call (dynamic int8), else one session with all cores].")
@click.option("--pairs-per-call", default=_R("pairs_per_call"), show_default=True, type=Count(1, 1_000_000),
              help="Pairs per ONNX call after length sorting (capped by the card's pairs_per_call: 1 for dynamic "
                   "int8).")
@click.option("--spin/--no-spin", default=_R("spin"), show_default=True,
              help="ORT busy-waiting threads; --no-spin on machines shared with other busy processes.")
@click.option("--provider", type=click.Choice(choices(RuntimeConfig, "provider")), default=_R("provider"),
              show_default=True)
@click.option("--api-key", envvar="DISTILRANK_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' (or set DISTILRANK_API_KEY).")
@click.option("--cache-size", default=_S("cache_size"), show_default=True, type=_count("cache_size"),
              help="LRU score cache entries (0 = off).")
@click.option("--scores", type=click.Choice(choices(ServerConfig, "scores")), default=_S("scores"), show_default=True,
              help="relevance_score of /v1/rerank: sigmoid(logit) in [0,1], the raw logit, or card: what the model "
                   "card's interpolation expects (raw logits for a pipeline's served model; sigmoid without one).")
@click.option("--graceful-timeout", default=_S("graceful_timeout_s"), show_default=True,
              type=_duration("graceful_timeout_s"),
              help="Seconds to finish in-flight requests on SIGTERM/SIGINT; requests still running then get 503 "
                   "and are logged as dropped.")
def serve(model_dir: str, host: str, port: int, max_batch_pairs: int, max_batch_tokens: int, max_wait_ms: float,
          max_queue: int,
          max_queue_requests: int, default_deadline_ms: float | None, max_body_bytes: int | None,
          header_timeout: float, body_timeout: float, max_docs: int, max_chars: int, threads: int | None,
          sessions: int | None, pairs_per_call: int, spin: bool, provider: str, api_key: str | None, cache_size: int,
          scores: str, graceful_timeout: float) -> None:
    """Serve the reranker: POST /v1/rerank (Cohere), POST /rerank (TEI), /health, /ready, /info, /metrics."""
    from ranker.runtime import RerankRuntime
    from ranker.server import bind_socket, create_app, make_server

    # click reads an empty DISTILRANK_API_KEY as unset; an empty key is a mistake, never "auth off"
    if api_key is None and "DISTILRANK_API_KEY" in os.environ:
        raise ConfigError("DISTILRANK_API_KEY is set but empty: give it a non-empty token, or unset it to run without "
                          "auth")
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key is empty: give a non-empty token, or leave the option out to run without auth")
    # validate everything, then take the port, before loading the model: a typo or a port in use fails in
    # milliseconds, and never after "ranker ready"
    config = ServerConfig(max_batch_pairs=max_batch_pairs, max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms,
                          max_queue=max_queue, max_queue_requests=max_queue_requests,
                          default_deadline_ms=default_deadline_ms, max_body_bytes=max_body_bytes,
                          header_timeout_s=header_timeout, body_timeout_s=body_timeout,
                          graceful_timeout_s=graceful_timeout, max_docs=max_docs, max_chars=max_chars, api_key=api_key,
                          cache_size=cache_size, scores=scores)  # type: ignore[arg-type]
    sock = bind_socket(host, port)
    try:
        runtime_config = RuntimeConfig(threads=threads, sessions=sessions, pairs_per_call=pairs_per_call,
                                       provider=provider, spin=spin)  # type: ignore[arg-type]
        runtime = RerankRuntime.load(model_dir, runtime_config)
        runtime.warmup()  # refuses a model whose scores are NaN or infinite (exit 4)
    except BaseException:
        sock.close()
        raise
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("binding %s without --api-key: anyone who can reach this port can use the model", host)
    server = make_server(create_app(runtime, config), host=host, port=port, sock=sock)
    server.run()
    if not server.started:
        raise SystemExit(1)
