"""Ranker replicas for client-side rescoring, with the plugin's policy (``RankerClient.java``).

Round robin over the replicas; a consecutive-failure circuit breaker per replica; failover to the next replica
on connection errors, timeouts, 429 and 5xx. A malformed answer or another 4xx is not retried elsewhere (every
replica would answer the same). The served model's defaults are read once from the first healthy replica's
``GET /info`` and cached; a replica whose card checksum differs is logged.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from distill.core.errors import ConfigError

from ._model_defaults import ModelDefaults, ServedScores, model_defaults

__all__ = ["RankerError", "RankerPool"]

logger = logging.getLogger(__name__)


class RankerError(Exception):
    """A ranker call failed; ``kind`` as in the plugin's stats, ``failover`` when another replica may answer."""

    def __init__(self, kind: str, message: str, failover: bool = False):
        super().__init__(message)
        self.kind = kind
        self.failover = failover


@dataclass
class _Endpoint:
    url: str
    client: object
    consecutive_failures: int = 0
    open_until: float = 0.0
    card_sha256: str | None = None
    mismatch_logged: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    failures_by_kind: Counter[str] = field(default_factory=Counter)

    def breaker_open(self) -> bool:
        return time.monotonic() < self.open_until


class RankerPool:
    """A ``score_fn`` for :func:`opensearch_plugin.rescore_hits` over one or more ranker replicas.

    Calling it returns :class:`ServedScores` (scores in input order, with ``meta.score``); ``model_defaults()``
    reads the card's defaults; ``stats()`` has the plugin's counters, per endpoint too.
    """

    def __init__(self, urls: str | Sequence[str], *, timeout: float = 10.0, failure_threshold: int = 5,
                 open_duration_s: float = 30.0, api_key: str | None = None) -> None:
        from ranker.client import RerankClient, RetryPolicy

        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls or any(not u.startswith(("http://", "https://")) for u in urls):
            raise ConfigError(f"ranker urls must be one or more http(s):// URLs, got {urls!r}")
        if failure_threshold < 1 or not math.isfinite(open_duration_s) or open_duration_s < 0:
            raise ConfigError("failure_threshold must be >= 1 and open_duration_s a finite number >= 0")
        self.timeout = timeout
        self.failure_threshold = failure_threshold
        self.open_duration_s = open_duration_s
        self.api_key = api_key
        self.endpoints = [_Endpoint(u.rstrip("/"), RerankClient(u, api_key=api_key, timeout=timeout,
                                                                 retry=RetryPolicy(retries=0))) for u in urls]
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._defaults: ModelDefaults | None = None
        self.counts: Counter[str] = Counter()
        self.failures_by_kind: Counter[str] = Counter()

    def __call__(self, query: str, documents: Sequence[str]) -> ServedScores:
        self.counts["requests"] += 1
        try:
            scores = self._score_on_some_replica(query, documents)
        except RankerError as exc:
            self.counts["failures"] += 1
            self.failures_by_kind[exc.kind] += 1
            raise
        self.counts["successes"] += 1
        self.counts["documents_scored"] += len(documents)
        return scores

    def _score_on_some_replica(self, query: str, documents: Sequence[str]) -> ServedScores:
        n = len(self.endpoints)
        first = next(self._next) % n
        last: RankerError | None = None
        for k in range(n):
            ep = self.endpoints[(first + k) % n]
            if ep.breaker_open():
                continue
            if last is not None:
                self.counts["failovers"] += 1
                logger.debug("failing over to %s after: %s", ep.url, last)
            ep.counts["requests"] += 1
            try:
                scores = self._call(ep, query, documents)
            except RankerError as exc:
                self._record_failure(ep, exc.kind)
                last = exc
                if not exc.failover:
                    break
                ep.counts["failovers_from"] += 1
                continue
            ep.consecutive_failures = 0
            ep.counts["successes"] += 1
            ep.counts["documents_scored"] += len(documents)
            self._check_card(ep)
            return scores
        if last is None:
            raise RankerError("breaker_open", f"circuit breaker open on every ranker ({n}) after "
                              f"{self.failure_threshold} consecutive failures")
        raise last

    def _record_failure(self, ep: _Endpoint, kind: str) -> None:
        ep.counts["failures"] += 1
        ep.failures_by_kind[kind] += 1
        ep.consecutive_failures += 1
        if ep.consecutive_failures >= self.failure_threshold:
            ep.open_until = time.monotonic() + self.open_duration_s
            ep.consecutive_failures = 0
            ep.counts["breaker_trips"] += 1
            logger.warning("circuit breaker opened for %s (%.0f s)", ep.url, self.open_duration_s)

    def _call(self, ep: _Endpoint, query: str, documents: Sequence[str]) -> ServedScores:
        from pydantic import ValidationError

        from ranker.client import RerankClientError

        try:
            response = ep.client.rerank(query, list(documents))  # type: ignore[attr-defined]
        except RerankClientError as exc:
            if exc.status == 0:
                kind = "timeout" if "Timeout" in exc.message else "connection"
                raise RankerError(kind, f"ranker at {ep.url}: {exc}", failover=True) from exc
            raise RankerError("http_status", f"ranker at {ep.url}: {exc}",
                              failover=exc.status >= 500 or exc.status == 429) from exc
        except (ValidationError, ValueError) as exc:
            raise RankerError("malformed", f"ranker at {ep.url} answered something that is not a rerank "
                              f"response: {exc}") from exc
        if len(response.results) != len(documents):
            raise RankerError("malformed", f"ranker returned {len(response.results)} results for "
                              f"{len(documents)} documents")
        scores: list[float | None] = [None] * len(documents)
        for r in response.results:
            if not 0 <= r.index < len(documents) or scores[r.index] is not None:
                raise RankerError("malformed", f"result index {r.index} out of range or repeated")
            if not math.isfinite(r.relevance_score):
                raise RankerError("malformed", f"relevance_score for index {r.index} is not finite")
            scores[r.index] = r.relevance_score
        meta = getattr(response, "meta", None)
        return ServedScores(scores, getattr(meta, "score", None))  # type: ignore[arg-type]

    def _info(self, ep: _Endpoint) -> dict[str, object]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.get(f"{ep.url}/info", timeout=self.timeout, headers=headers)
        except httpx.HTTPError as exc:
            raise RankerError("info", f"GET {ep.url}/info failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise RankerError("info", f"GET {ep.url}/info answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise RankerError("info", f"GET {ep.url}/info is not JSON") from exc

    def model_defaults(self) -> ModelDefaults:
        """The served model's defaults from the first replica (configured order, breaker closed) whose
        ``GET /info`` answers; cached. Raises :class:`RankerError` when none answers."""
        with self._lock:
            if self._defaults is not None:
                return self._defaults
            last: RankerError | None = None
            for ep in self.endpoints:
                if ep.breaker_open():
                    continue
                try:
                    info = self._info(ep)
                except RankerError as exc:
                    self._record_failure(ep, "info")
                    last = exc
                    continue
                self._defaults = model_defaults(info, ep.url)
                ep.card_sha256 = self._defaults.card_sha256
                break
            else:
                raise RankerError("info", "no ranker answered GET /info, so the model card's defaults are unknown"
                                  + (f": {last}" if last else " (every breaker is open)"))
        for ep in self.endpoints:
            self._check_card(ep)
        return self._defaults

    def _check_card(self, ep: _Endpoint) -> None:
        """Reads a replica's card checksum once; warns when it differs from the card the defaults came from."""
        defaults = self._defaults
        if defaults is None:
            return
        if ep.card_sha256 is None and not ep.breaker_open():
            try:
                sha = self._info(ep).get("card_sha256")
                ep.card_sha256 = sha if isinstance(sha, str) else ""
            except RankerError as exc:
                ep.card_sha256 = ""
                logger.warning("could not read GET /info of %s to compare its model card: %s", ep.url, exc)
        if ep.card_sha256 and ep.card_sha256 != defaults.card_sha256 and not ep.mismatch_logged:
            ep.mismatch_logged = True
            logger.warning("ranker replicas serve different models: %s reports card_sha256 %s but %s (where the "
                           "defaults were read) reports %s; every replica must serve the same export", ep.url,
                           ep.card_sha256, defaults.source, defaults.card_sha256)

    def stats(self) -> dict[str, object]:
        """The plugin's ``/_plugins/distilrank/stats`` shape for this client."""
        defaults = self._defaults
        endpoints = [{"url": ep.url, **{k: ep.counts[k] for k in ("requests", "successes", "failures",
                                                                   "failovers_from", "documents_scored",
                                                                   "breaker_trips")},
                      "failures_by_kind": dict(ep.failures_by_kind), "breaker_open": ep.breaker_open(),
                      "card_sha256": ep.card_sha256 or None} for ep in self.endpoints]
        return {"endpoint": self.endpoints[0].url,
                **{k: self.counts[k] for k in ("requests", "successes", "failures", "failovers",
                                               "documents_scored")},
                "failures_by_kind": dict(self.failures_by_kind),
                "breaker_open": all(ep.breaker_open() for ep in self.endpoints),
                "endpoints": endpoints,
                "card_mismatch": any(e["card_sha256"] and defaults and e["card_sha256"] != defaults.card_sha256
                                     for e in endpoints),
                "model": defaults.to_dict() if defaults else None}

    def close(self) -> None:
        for ep in self.endpoints:
            ep.client.close()  # type: ignore[attr-defined]

    def __enter__(self) -> RankerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
