"""The one HTTP client of remote teachers: retries, waits, and the checks every answer goes through.

Both remote sources use it: ``endpoint`` (rerank servers) and ``openai`` (OpenAI-compatible LLM servers).

* :class:`EndpointConfig`: URL, model, key, batching, concurrency, timeouts, retries; validated at
  construction (a URL without a host is a :class:`ConfigError`, exit 2, before any request).
* :class:`EndpointClient`: ``POST``/``GET`` JSON with exponential backoff on connection errors, timeouts,
  408/425/429 and 5xx, honouring ``Retry-After`` (seconds or an HTTP date) and ``retry-after-ms``; every
  wait is capped at ``max_wait_s`` and a capped wait is logged. Other 4xx fail at once
  (:class:`EndpointRefused`), an answer that is not JSON fails at once (:class:`EndpointError`).
* :func:`scores_by_index`: the one check of "one score per item, by index" answers (rerank results,
  completion choices): every index an int in range, none twice, none missing, every score finite.
* :func:`read_rerank`: every documented rerank answer shape, detected from the answer itself.

Malformed answers, refusals and a server that stays down are :class:`EndpointError` (exit code 3): the teacher
is unusable, and the labels written so far are kept for a resume.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from distill.core.errors import ConfigError, MissingPrerequisiteError

__all__ = ["ENDPOINT_FORMATS", "EndpointClient", "EndpointConfig", "EndpointError", "EndpointFormat",
           "EndpointRefused", "check_url", "read_rerank", "rerank_request", "retry_after_s", "scores_by_index"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: request shapes of rerank servers. ``cohere``: ``{"query", "documents", "top_n"}`` (Cohere v1/v2, Jina, vLLM
#: /rerank, Infinity); ``tei``: ``{"query", "texts"}`` (text-embeddings-inference /rerank); ``vllm-score``:
#: ``{"text_1", "text_2"}`` (vLLM /score). ``auto``: ``vllm-score`` for a URL ending in /score, else ``cohere``,
#: switching to ``tei`` when the server answers that it needs ``texts``.
EndpointFormat = Literal["auto", "cohere", "tei", "vllm-score"]
ENDPOINT_FORMATS: tuple[str, ...] = ("auto", "cohere", "tei", "vllm-score")

_RETRIED = frozenset({408, 425, 429})
_EXPECTED_RERANK = ('{"results": [{"index": int, "relevance_score": float}, ...]} (Cohere, Jina, vLLM /rerank, '
                    'Infinity), [{"index": int, "score": float}, ...] (TEI) or {"data": [{"index": int, "score": '
                    "float}, ...]} (vLLM /score)")


class EndpointError(MissingPrerequisiteError):
    """The remote teacher is down, keeps failing, refuses the request, or answers something malformed."""


class EndpointRefused(EndpointError):
    """The server answered a 4xx that retrying cannot fix (``status`` and the start of ``body`` kept)."""

    def __init__(self, message: str, status: int, body: str):
        super().__init__(message)
        self.status, self.body = status, body


def check_url(url: str, what: str = "endpoint url") -> str:
    """``url`` when it is an http(s) URL with a host (and a valid port); else a :class:`ConfigError`."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError as exc:
        raise ConfigError(f"{what} {url!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{what} must start with http:// or https://, got {url!r}")
    if not parts.hostname or not port_ok:
        raise ConfigError(f"{what} {url!r} has no host (or a bad port); e.g. http://127.0.0.1:8080/v1/rerank")
    return url


def _finite(name: str, value: float, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ConfigError(f"endpoint {name} must be a finite number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class EndpointConfig:
    """How to reach a remote teacher. ``batch_size`` counts documents per request (most rerank servers cap it:
    Cohere at 1000, TEI at its ``max_client_batch_size``); ``concurrency`` counts requests in flight."""

    url: str = ""
    model: str | None = None
    api_key: str | None = None
    batch_size: int = 32
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 0.5
    #: characters of each document sent (the server truncates to its own token limit anyway)
    max_doc_chars: int = 4000
    format: EndpointFormat = "auto"
    concurrency: int = 4
    #: the longest wait between two tries, whatever the backoff or the server's Retry-After asks for
    max_wait_s: float = 120.0

    def __post_init__(self) -> None:
        check_url(self.url)
        if self.format not in ENDPOINT_FORMATS:
            raise ConfigError(f"endpoint format must be one of {list(ENDPOINT_FORMATS)}, got {self.format!r}")
        for name in ("batch_size", "retries", "concurrency", "max_doc_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"endpoint {name} must be an integer, got {value!r}")
        _finite("batch_size", self.batch_size, 1, 100_000)
        _finite("retries", self.retries, 0, 1000)
        _finite("concurrency", self.concurrency, 1, 1024)
        _finite("max_doc_chars", self.max_doc_chars, 1)
        _finite("timeout_s", self.timeout_s, 1e-3, 86_400)
        _finite("backoff_s", self.backoff_s, 0, 86_400)
        _finite("max_wait_s", self.max_wait_s, 0, 86_400)
        self._check_key()

    def _check_key(self) -> None:
        key = self.api_key
        if key is None:
            return
        if not key.strip():
            raise ConfigError("endpoint api_key is empty; leave it unset for an open endpoint")
        if key != key.strip() or not key.isascii() or not key.isprintable():
            raise ConfigError("endpoint api_key has surrounding spaces or characters outside printable ASCII; "
                              "no HTTP header can carry it as given")


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a 429/503 answer asks for, in seconds (``inf`` for an absurd one), or None when it asks for none.

    ``retry-after-ms`` (OpenAI, vLLM behind some gateways) wins over ``Retry-After`` (RFC 9110: delay-seconds or
    an HTTP date). Unparseable values are ignored; a date in the past is 0. The caller caps the result.
    """
    ms = (headers.get("retry-after-ms") or "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", ms):
        return float(ms) / 1000.0
    raw = (headers.get("retry-after") or "").strip()
    if not raw:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)  # a 400-digit value is inf: capped by the caller, never passed to sleep
    try:
        when = email.utils.parsedate_to_datetime(raw)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


class EndpointClient:
    """JSON over HTTP with the retry policy above. Thread-safe: :meth:`map` runs calls concurrently."""

    def __init__(self, config: EndpointConfig, client: Any = None, what: str = "endpoint",
                 answer: str = "a JSON answer"):
        import httpx

        self.config, self.what, self.answer = config, what, answer
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = client or httpx.Client(timeout=config.timeout_s, headers=headers)
        self._stop = threading.Event()

    def post_json(self, url: str, body: Any) -> Any:
        return self._call("POST", url, body)

    def get_json(self, url: str) -> Any:
        return self._call("GET", url, None)

    def _call(self, method: str, url: str, body: Any) -> Any:
        import httpx

        cfg = self.config
        last = ""
        for attempt in range(cfg.retries + 1):
            wait = cfg.backoff_s * 2.0 ** min(attempt, 60)
            try:
                kwargs = {"json": body} if body is not None else {}
                resp = self.client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return self._json(resp, url)
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in _RETRIED and resp.status_code < 500:
                    raise EndpointRefused(_refusal(self.what, url, resp.status_code, last), resp.status_code,
                                          resp.text[:2000])
                wait = max(wait, self._asked_wait(resp.headers))
            if attempt < cfg.retries:
                wait = min(wait, cfg.max_wait_s)
                logger.warning("%s: %s; retry %d/%d in %.1f s", self.what, last, attempt + 1, cfg.retries, wait)
                if self._stop.wait(wait):
                    raise EndpointError(f"{self.what} {url}: stopped, another request failed")
        raise EndpointError(f"{self.what} {url} failed {cfg.retries + 1} times (last: {last}); is it up? "
                            "Labels written so far are kept: re-run the same command to resume")

    def _asked_wait(self, headers: Mapping[str, str]) -> float:
        asked = retry_after_s(headers)
        if asked is None:
            return 0.0
        if asked > self.config.max_wait_s:
            logger.warning("%s asked to wait %s s (Retry-After %r); waiting %.1f s, the most max_wait_s allows",
                           self.what, f"{asked:.0f}" if math.isfinite(asked) else "forever",
                           headers.get("retry-after") or headers.get("retry-after-ms"), self.config.max_wait_s)
            return self.config.max_wait_s
        return asked

    def _json(self, resp: Any, url: str) -> Any:
        try:
            return resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EndpointError(f"{self.what} {url} answered something that is not {self.answer} (not JSON: {exc}; "
                                f"body starts {resp.text[:120]!r})") from exc

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` with up to ``concurrency`` calls in flight, in order. The first failure
        stops the other calls' retries and is raised."""
        workers = min(self.config.concurrency, len(items))
        if workers <= 1:
            return [fn(x) for x in items]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="endpoint")
        futures = [pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            self._stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._stop.clear()


def _refusal(what: str, url: str, status: int, last: str) -> str:
    hint = {401: "check the API key", 403: "check the API key and its permissions",
            404: "check the URL (the path included)", 413: "lower --endpoint-batch-size (the server caps documents "
            "per request)"}.get(status, "check the URL, model name and API key")
    return f"{what} {url} refused the request ({last}); {hint}"


def answer_error(client: EndpointClient, url: str, problem: object, payload: Any, expected: str) -> EndpointError:
    """The :class:`EndpointError` for a JSON answer of the wrong shape (saying what was wrong and expected)."""
    head = json.dumps(payload, ensure_ascii=False, default=str)[:160]
    return EndpointError(f"{client.what} {url} answered something that is not {client.answer} ({problem}; "
                         f"body starts {head!r}); expected {expected}")


def _index(raw: object, n: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"result index {raw!r} is not an integer")
    if not 0 <= raw < n:
        raise ValueError(f"result index {raw} is out of range: the request had {n} item(s), indexes 0..{n - 1}")
    return raw


def _score(raw: object, idx: int) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"the score of index {idx} is {raw!r}, not a finite number")
    return float(raw)


def scores_by_index(items: Iterable[tuple[object, object]], n: int) -> list[float]:
    """Scores in request order from ``(index, score)`` pairs in any order. A ValueError says what is wrong:
    an index that is not an int in ``0..n-1``, an index given twice (a duplicate or extra result), a missing
    index, or a score that is not a finite number."""
    scores: dict[int, float] = {}
    for raw_idx, raw_score in items:
        idx = _index(raw_idx, n)
        if idx in scores:
            raise ValueError(f"result index {idx} appears twice (duplicate or extra results)")
        scores[idx] = _score(raw_score, idx)
    if len(scores) != n:
        missing = sorted(set(range(n)) - set(scores))
        raise ValueError(f"{len(scores)} scores for {n} items (missing indexes {missing[:10]})")
    return [scores[i] for i in range(n)]


def _pairs(items: object, score_key: str) -> list[tuple[object, object]]:
    if not isinstance(items, list):
        raise ValueError(f"the result list is a {type(items).__name__}, not a list")
    out = []
    for r in items:
        if not isinstance(r, dict) or "index" not in r or score_key not in r:
            raise ValueError(f"a result is not an object with 'index' and {score_key!r}: {str(r)[:80]}")
        out.append((r["index"], r[score_key]))
    return out


def read_rerank(payload: Any, n: int) -> tuple[str, list[float]]:
    """(shape, scores in request order) of any documented rerank answer; a ValueError names what is wrong.

    * ``{"results": [{"index", "relevance_score", ...}]}``: Cohere v1 and v2, Jina, vLLM /rerank, Infinity;
    * ``[{"index", "score", ...}]``: TEI /rerank;
    * ``{"data": [{"index", "score"}]}``: vLLM /score; ``{"data": [{"index", "relevance_score"}]}``: Infinity < 0.0.70.
    """
    if isinstance(payload, list):
        return "tei", scores_by_index(_pairs(payload, "score"), n)
    if isinstance(payload, dict) and "results" in payload:
        return "cohere", scores_by_index(_pairs(payload["results"], "relevance_score"), n)
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        first = payload["data"][0] if payload["data"] else {}
        key = "relevance_score" if isinstance(first, dict) and "relevance_score" in first else "score"
        return "vllm-score" if key == "score" else "cohere", scores_by_index(_pairs(payload["data"], key), n)
    raise ValueError("neither a 'results' list, a 'data' list nor a bare list of results")


def guess_format(url: str) -> str:
    """The request shape ``auto`` starts with: ``vllm-score`` for a URL ending in /score, else ``cohere``."""
    return "vllm-score" if urlsplit(url).path.rstrip("/").endswith("/score") else "cohere"


def rerank_request(fmt: str, url: str, query: str, docs: list[str], model: str | None) -> dict[str, Any]:
    """The request body of one rerank call in the server's documented shape (see :data:`EndpointFormat`)."""
    if fmt == "tei":
        # raw_scores: logits, not sigmoids that saturate in float32 at the top of the list
        return {"query": query, "texts": docs, "truncate": True, "raw_scores": True, "return_text": False}
    body: dict[str, Any] = ({"text_1": query, "text_2": docs} if fmt == "vllm-score"
                            else {"query": query, "documents": docs, "top_n": len(docs)})
    if fmt == "cohere" and "/v2/" not in urlsplit(url).path:
        body["return_documents"] = False  # Cohere v1, Jina, Infinity: no echo of the texts (v2 has no such field)
    if model:
        body["model"] = model
    return body


def needs_texts(exc: EndpointRefused) -> bool:
    """Whether a refusal is TEI's answer to a Cohere-shaped body (axum: ``missing field `texts```)."""
    return exc.status in (400, 422) and "texts" in exc.body


def expected_rerank() -> str:
    return _EXPECTED_RERANK
