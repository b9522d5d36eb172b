"""The server's limits and behaviour as one validated dataclass (no web framework imported).

``ranker.cli`` takes its option defaults from here and builds it before the model loads, so a bad
value fails in milliseconds; ``ranker.server`` serves with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from distill.core.errors import ConfigError
from distill.core.model_card import ModelCard
from distill.core.params import INT32_MAX, count, finite_float
from ranker.batcher import BatcherConfig

__all__ = ["COUNT_RANGES", "DURATION_RANGES", "ScoreMode", "ServerConfig"]

#: ``card``: the convention the model card's interpolation expects (raw logits for a pipeline's served model),
#: sigmoid when the card has no interpolation
ScoreMode = Literal["card", "sigmoid", "raw"]

#: bytes per character in the worst legal case: a JSON \uXXXX escape (json.dumps' default for non-ASCII)
_BYTES_PER_CHAR = 6
#: bytes of JSON one character can take at most: a character outside the BMP written as two \uXXXX escapes
_MAX_BYTES_PER_CHAR = 12
_PER_DOC_OVERHEAD = 1024  # quotes, commas, {"text": ...} and the ids/metadata Cohere lets callers attach
_BODY_MARGIN = 64 * 1024

#: the range of every duration field (finite; None where the field may be unset), the same for the CLI's options
DURATION_RANGES: dict[str, tuple[float, float]] = {
    "max_wait_ms": (0.0, 10_000.0),
    "default_deadline_ms": (0.0, 86_400_000.0),
    "header_timeout_s": (0.0, 86_400.0),
    "body_timeout_s": (0.0, 86_400.0),
    "graceful_timeout_s": (0.0, 86_400.0),
}
#: durations that must be > their minimum (a timeout of 0 would refuse everything)
_OPEN_AT_ZERO = frozenset({"default_deadline_ms", "header_timeout_s", "body_timeout_s", "graceful_timeout_s"})
#: the range of every count field
COUNT_RANGES: dict[str, tuple[int, int]] = {
    "max_batch_pairs": (1, 1_000_000),
    "max_batch_tokens": (1, INT32_MAX),
    "max_queue": (1, INT32_MAX),
    "max_queue_requests": (1, 1_000_000),
    "max_docs": (1, 10_000_000),
    "max_chars": (1, 100_000_000),
    "max_body_bytes": (1024, 2**40),
    "cache_size": (0, INT32_MAX),
}


@dataclass(frozen=True)
class ServerConfig:
    """Limits are per request: ``max_docs`` documents, ``max_chars`` characters per text (query
    included), ``max_body_bytes`` bytes of body (None: derived, see :meth:`body_limit`).
    ``max_batch_pairs`` and ``max_batch_tokens`` bound one inference batch across requests (the batcher shares it
    among the requests waiting, so none waits behind more than one chunk of another; see :mod:`ranker.batcher`).
    ``max_queue`` bounds queued pairs (>= max_docs so one full request always fits),
    ``max_queue_requests`` queued requests. ``default_deadline_ms`` applies to requests without the
    deadline header; None (the default) means such requests are shed only by the queue bounds, never
    by time -- callers that have a deadline should send it. ``cache_size`` 0 disables the score cache.
    Timeouts are in seconds: ``header_timeout_s`` for the request line and headers, ``body_timeout_s``
    for the whole body, ``graceful_timeout_s`` for requests in flight at shutdown. Every duration and count is
    finite and within its range (:data:`DURATION_RANGES`, :data:`COUNT_RANGES`), whatever the caller is."""

    max_batch_pairs: int = 64
    max_batch_tokens: int = 4096
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
        # validated and stored as numbers (a config file may spell them as strings)
        for name, (low, high) in DURATION_RANGES.items():
            if getattr(self, name) is not None:
                number = finite_float(name, getattr(self, name), low, high, min_open=name in _OPEN_AT_ZERO)
                object.__setattr__(self, name, number)
        for name, (low, high) in COUNT_RANGES.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, count(name, getattr(self, name), low, high))
        if self.max_queue < self.max_docs:
            raise ConfigError(f"max_queue={self.max_queue} < max_docs={self.max_docs}: the queue must hold one full "
                              "request; raise --max-queue or lower --max-docs")
        if self.api_key is not None:
            check_api_key(self.api_key)
        if self.scores not in ("card", "sigmoid", "raw"):
            raise ConfigError(f"scores={self.scores!r}: choose card, sigmoid or raw")
        self.batcher_config()  # validates the batcher's fields

    def batcher_config(self) -> BatcherConfig:
        return BatcherConfig(self.max_batch_pairs, self.max_wait_ms, self.max_queue, self.max_queue_requests,
                             max_batch_tokens=self.max_batch_tokens)

    def max_text_bytes(self) -> int:
        """The most bytes of JSON one text (or one document object) may take: ``max_chars`` characters written
        as 12-byte surrogate-pair escapes, plus 1 KiB for an object's syntax and metadata. The body scan refuses
        a longer one as it streams in; the exact character count is checked once it is parsed."""
        return _MAX_BYTES_PER_CHAR * self.max_chars + _PER_DOC_OVERHEAD

    def body_limit(self) -> int:
        """``max_body_bytes``, or the largest body a request within max_docs/max_chars can have: every
        character \\u-escaped (6 bytes) plus 1 KiB per document for JSON syntax and metadata, + 64 KiB."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return (self.max_docs + 1) * (_BYTES_PER_CHAR * self.max_chars + _PER_DOC_OVERHEAD) + _BODY_MARGIN

    def limits(self) -> dict[str, int | float | bool]:
        d = asdict(self)
        keys = ("max_batch_pairs", "max_batch_tokens", "max_wait_ms", "max_queue", "max_queue_requests", "max_docs",
                "max_chars", "cache_size", "header_timeout_s", "body_timeout_s", "graceful_timeout_s")
        out: dict[str, int | float | bool] = {k: d[k] for k in keys}
        out["max_body_bytes"] = self.body_limit()
        out["max_text_bytes"] = self.max_text_bytes()
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


def check_api_key(key: str) -> None:
    """An API key must be one an HTTP client can send and the server can match: not empty, no spaces around it
    (HTTP strips them from a header), no control characters, nothing above U+00FF (header values are Latin-1)."""
    if not key.strip():
        raise ConfigError("api_key is empty; unset it to disable auth or give a non-empty token")
    if key != key.strip():
        raise ConfigError("api_key has spaces before or after it, which an Authorization header cannot carry; "
                          "remove them")
    bad = next((c for c in key if ord(c) > 0xFF or ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        what = "is above U+00FF" if ord(bad) > 0xFF else "is a control character"
        raise ConfigError(f"api_key holds U+{ord(bad):04X}, which {what}: an HTTP header cannot carry it, so no "
                          "request could ever match; use printable ASCII (e.g. a hex or base64 token)")
