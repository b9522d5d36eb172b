"""The server's limits and behaviour as one validated dataclass (no web framework imported).

``ranker.cli`` takes its option defaults from here and builds it before the model loads, so a bad
value fails in milliseconds; ``ranker.server`` serves with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from distill.core.errors import ConfigError
from distill.core.model_card import ModelCard
from ranker.batcher import BatcherConfig

__all__ = ["ScoreMode", "ServerConfig"]

#: ``card``: the convention the model card's interpolation expects (raw logits for a pipeline's served model),
#: sigmoid when the card has no interpolation
ScoreMode = Literal["card", "sigmoid", "raw"]

#: bytes per character in the worst legal case: a JSON \uXXXX escape (json.dumps' default for non-ASCII)
_BYTES_PER_CHAR = 6
_PER_DOC_OVERHEAD = 1024  # quotes, commas, {"text": ...} and the ids/metadata Cohere lets callers attach
_BODY_MARGIN = 64 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """Limits are per request: ``max_docs`` documents, ``max_chars`` characters per text (query
    included), ``max_body_bytes`` bytes of body (None: derived, see :meth:`body_limit`).
    ``max_queue`` bounds queued pairs (>= max_docs so one full request always fits),
    ``max_queue_requests`` queued requests. ``default_deadline_ms`` applies to requests without the
    deadline header; None (the default) means such requests are shed only by the queue bounds, never
    by time -- callers that have a deadline should send it. ``cache_size`` 0 disables the score cache.
    Timeouts are in seconds: ``header_timeout_s`` for the request line and headers, ``body_timeout_s``
    for each read of the body, ``graceful_timeout_s`` for requests in flight at shutdown."""

    max_batch_pairs: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    max_queue_requests: int = 32
    max_docs: int = 1000
    max_chars: int = 20_000
    max_body_bytes: int | None = None
    default_deadline_ms: float | None = None
    api_key: str | None = None
    cache_size: int = 0
    scores: ScoreMode = "card"
    warmup: bool = True
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    graceful_timeout_s: float = 30.0

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
        if self.scores not in ("card", "sigmoid", "raw"):
            raise ConfigError(f"scores={self.scores!r}: choose card, sigmoid or raw")
        if self.max_body_bytes is not None and self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes={self.max_body_bytes}: must be >= 1024 bytes")
        if self.default_deadline_ms is not None and not self.default_deadline_ms > 0:
            raise ConfigError(f"default_deadline_ms={self.default_deadline_ms}: use a positive number of milliseconds "
                              "or leave it unset (no time-based shedding)")
        for name in ("header_timeout_s", "body_timeout_s", "graceful_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be > 0 seconds")
        self.batcher_config()  # validates the batcher's fields

    def batcher_config(self) -> BatcherConfig:
        return BatcherConfig(self.max_batch_pairs, self.max_wait_ms, self.max_queue, self.max_queue_requests)

    def body_limit(self) -> int:
        """``max_body_bytes``, or the largest body a request within max_docs/max_chars can have: every
        character \\u-escaped (6 bytes) plus 1 KiB per document for JSON syntax and metadata, + 64 KiB."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return (self.max_docs + 1) * (_BYTES_PER_CHAR * self.max_chars + _PER_DOC_OVERHEAD) + _BODY_MARGIN

    def limits(self) -> dict[str, int | float | bool]:
        d = asdict(self)
        keys = ("max_batch_pairs", "max_wait_ms", "max_queue", "max_queue_requests", "max_docs", "max_chars", "cache_size",
                "header_timeout_s", "body_timeout_s", "graceful_timeout_s")
        out: dict[str, int | float | bool] = {k: d[k] for k in keys}
        out["max_body_bytes"] = self.body_limit()
        if self.default_deadline_ms is not None:
            out["default_deadline_ms"] = self.default_deadline_ms
        return out | {"auth": self.api_key is not None}


def resolve_scores(mode: ScoreMode, card: ModelCard) -> Literal["sigmoid", "raw"]:
    """The score convention served: ``card`` follows the card's interpolation (so that a blend downstream gets
    the scores it was tuned on), else sigmoid."""
    if mode != "card":
        return mode
    interp = card.interpolation
    return "raw" if interp is not None and interp.score_convention == "raw_logit" else "sigmoid"
