"""Cross-request micro-batching with admission control and per-request deadlines.

Requests from the event loop are queued as jobs; ONE worker thread takes pairs from the head of
the queue until ``max_batch_pairs`` or ``max_wait_ms`` after the first waiting pair, runs them
through the runtime in one call (which length-sorts them), and hands each job its slice of the
scores. One batch at a time with all cores in the session was the fastest setting on 2 cores.

Admission control protects goodput (pairs answered within their deadline), not just memory:

* the queue is bounded in *requests* (``max_queue_requests``: 64 one-document requests are 64
  event-loop tasks and 64 responses to write) and in *pairs* (``max_queue_pairs``: a 100-document
  request costs 100x a 1-document one); a job that does not fit raises :class:`QueueFullError` at
  once (503 + Retry-After);
* the worker measures its service rate in pairs/s (an EWMA over batches). A job with a deadline
  whose expected completion -- (pairs queued + pairs in the running batch + its own pairs) / rate --
  falls after that deadline (less ``deadline_headroom``) raises :class:`OverloadedError` at admission (503 + Retry-After):
  accepting it would spend compute on an answer that arrives too late;
* a queued job whose deadline has passed is dropped before it is scored
  (:class:`DeadlineExceededError`, 504), so no compute goes to answers nobody waits for.

Failure isolation: if scoring a batch raises, each request of the batch is retried on its own and
only the request(s) whose own pairs still fail get the error (:class:`ScoringError`); the others get
their scores. One bad request can never fail the requests it happened to share a batch with.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from distill.core.errors import ConfigError

__all__ = [
    "AdmissionError",
    "BatcherConfig",
    "DeadlineExceededError",
    "MicroBatcher",
    "OverloadedError",
    "QueueFullError",
    "Scorer",
    "ScoringError",
    "ShuttingDownError",
]

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray: ...


class AdmissionError(Exception):
    """The job was refused at admission; ``retry_after_s`` is when retrying may succeed."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(AdmissionError):
    """The queue is at ``max_queue_requests`` requests or would exceed ``max_queue_pairs`` pairs."""

    def __init__(self, pending: int, retry_after_s: float, queued_requests: int = 0, limit: str = "pairs"):
        super().__init__(f"{pending} pairs in {queued_requests} requests already queued (limit on {limit})", retry_after_s)
        self.pending = pending
        self.queued_requests = queued_requests
        self.limit = limit


class OverloadedError(AdmissionError):
    """The expected completion time of the job lies after its deadline."""

    def __init__(self, expected_s: float, budget_s: float, retry_after_s: float):
        super().__init__(f"about {expected_s * 1000:.0f} ms of work is ahead of this request but its deadline is "
                         f"{max(budget_s, 0) * 1000:.0f} ms away", retry_after_s)
        self.expected_s = expected_s
        self.budget_s = budget_s


class DeadlineExceededError(Exception):
    pass


class ScoringError(Exception):
    """Scoring this request's own pairs raised (after isolating it from the rest of its batch)."""


class ShuttingDownError(Exception):
    pass


@dataclass(frozen=True)
class BatcherConfig:
    """``max_batch_pairs``: pairs per worker cycle (across requests). ``max_wait_ms``: how long the
    worker waits for more pairs after the first one arrives. ``max_queue_pairs``: pairs allowed to
    wait; must hold at least one full request (``>= max_docs`` of the server).
    ``max_queue_requests``: requests allowed to wait. ``rate_alpha``: weight of the newest batch in
    the service-rate EWMA (pairs/s). ``deadline_headroom``: the share of a request's remaining time
    its expected completion may use at admission; the rest absorbs estimate error and the time spent
    outside the batcher (HTTP, JSON). It costs no goodput: 0.8 s of queued work keeps the worker as
    busy as 1 s does."""

    max_batch_pairs: int = 64
    max_wait_ms: float = 2.0
    max_queue_pairs: int = 1024
    max_queue_requests: int = 256
    rate_alpha: float = 0.2
    deadline_headroom: float = 0.8

    def __post_init__(self) -> None:
        if self.max_batch_pairs < 1:
            raise ConfigError(f"max_batch_pairs={self.max_batch_pairs}: must be >= 1")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: must be >= 0 milliseconds")
        if self.max_queue_pairs < 1:
            raise ConfigError(f"max_queue_pairs={self.max_queue_pairs}: must be >= 1")
        if self.max_queue_requests < 1:
            raise ConfigError(f"max_queue_requests={self.max_queue_requests}: must be >= 1")
        if not 0 < self.rate_alpha <= 1:
            raise ConfigError(f"rate_alpha={self.rate_alpha}: must be in (0, 1]")
        if not 0 < self.deadline_headroom <= 1:
            raise ConfigError(f"deadline_headroom={self.deadline_headroom}: must be in (0, 1]")


@dataclass(eq=False)
class _Job:
    queries: list[str]
    docs: list[str]
    deadline: float | None
    done: Callable[[np.ndarray | None, BaseException | None], None]
    scores: np.ndarray = field(init=False)
    taken: int = 0      # pairs handed to a batch so far
    finished: int = 0   # pairs scored so far
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.scores = np.empty(len(self.docs), dtype=np.float32)


class MicroBatcher:
    """Thread-safe: :meth:`submit` (async) from the event loop, :meth:`submit_blocking` from threads.

    Deadlines are ``time.monotonic()`` instants. ``on_batch(pairs, seconds)`` is called after every
    scored batch; ``on_queue_depth(pairs, requests)`` whenever the queue changes."""

    def __init__(self, scorer: Scorer, config: BatcherConfig | None = None,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_queue_depth: Callable[[int, int], None] | None = None):
        self.scorer = scorer
        self.config = config or BatcherConfig()
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._jobs: deque[_Job] = deque()
        self._pending = 0  # pairs queued and not yet taken into a batch
        self._in_batch = 0  # pairs of the batch being scored now
        self._cond = threading.Condition()
        self._closing = False
        self._rate = 0.0  # pairs/s, EWMA over batches; 0 until the first batch is measured
        self._thread = threading.Thread(target=self._run, name="distilrank-batcher", daemon=True)
        self._thread.start()

    @property
    def pending_pairs(self) -> int:
        return self._pending

    @property
    def queued_requests(self) -> int:
        return len(self._jobs)

    @property
    def service_rate(self) -> float:
        """Measured pairs/s of the worker (EWMA); 0.0 before the first batch."""
        return self._rate

    def expected_wait_s(self, extra_pairs: int = 0) -> float:
        """Seconds until ``extra_pairs`` more pairs would be scored, at the measured service rate."""
        if not self._rate:
            return 0.0
        return (self._pending + self._in_batch + extra_pairs) / self._rate

    def _enqueue(self, queries: list[str], docs: list[str], deadline: float | None,
                 done: Callable[[np.ndarray | None, BaseException | None], None]) -> _Job:
        n = len(docs)
        cfg = self.config
        with self._cond:
            if self._closing:
                raise ShuttingDownError("the server is shutting down")
            if len(self._jobs) >= cfg.max_queue_requests:
                raise QueueFullError(self._pending, max(0.05, self.expected_wait_s()), len(self._jobs), "requests")
            # an empty queue always takes one job, even one larger than the bound
            if self._pending and self._pending + n > cfg.max_queue_pairs:
                raise QueueFullError(self._pending, max(0.05, self.expected_wait_s()), len(self._jobs), "pairs")
            if deadline is not None:
                expected = self.expected_wait_s(n)
                budget = deadline - time.monotonic()
                if expected > budget * cfg.deadline_headroom:
                    raise OverloadedError(expected, budget, retry_after_s=max(
                        0.05, expected - max(budget, 0.0) * cfg.deadline_headroom))
            job = _Job(queries, docs, deadline, done)
            self._jobs.append(job)
            self._pending += n
            self._cond.notify()
        self._report_depth()
        return job

    async def submit(self, query: str | Sequence[str], docs: Sequence[str], deadline: float | None = None) -> np.ndarray:
        """Raw logits for the pairs, in order. ``deadline`` is a ``time.monotonic()`` instant."""
        docs = list(docs)
        queries = [query] * len(docs) if isinstance(query, str) else list(query)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[np.ndarray] = loop.create_future()

        def done(scores: np.ndarray | None, exc: BaseException | None) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(scores)  # type: ignore[arg-type]
            loop.call_soon_threadsafe(settle)

        job = self._enqueue(queries, docs, deadline, done)
        try:
            if deadline is None:
                return await fut
            return await asyncio.wait_for(fut, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            self._cancel(job)
            raise DeadlineExceededError("the deadline passed while the request was queued or computing") from exc
        except asyncio.CancelledError:  # client went away or shutdown timed out: do not compute for nobody
            self._cancel(job)
            raise

    def submit_blocking(self, query: str, docs: Sequence[str], deadline: float | None = None) -> np.ndarray:
        event = threading.Event()
        box: dict[str, object] = {}

        def done(scores: np.ndarray | None, exc: BaseException | None) -> None:
            box["scores"], box["exc"] = scores, exc
            event.set()

        self._enqueue([query] * len(docs), list(docs), deadline, done)
        event.wait()
        if box["exc"] is not None:
            raise box["exc"]  # type: ignore[misc]
        return box["scores"]  # type: ignore[return-value]

    def _cancel(self, job: _Job) -> None:
        with self._cond:
            self._drop_locked(job)
        self._report_depth()

    def _drop_locked(self, job: _Job) -> None:
        """Forget a job (caller holds the lock): its untaken pairs leave the queue."""
        job.cancelled = True
        if job in self._jobs:
            self._pending -= len(job.docs) - job.taken
            self._jobs.remove(job)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        with self._cond:
            if job.cancelled:
                return
            self._drop_locked(job)
        job.done(None, exc)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(self._pending, len(self._jobs))

    def _take_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for work, then up to max_wait_ms for the batch to fill; return (job, start, stop) slices.

        Jobs whose deadline has passed are answered with DeadlineExceededError here, unscored."""
        cfg = self.config
        expired: list[_Job] = []
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None  # closing and drained
            fill_by = time.monotonic() + cfg.max_wait_ms / 1000
            while self._pending < cfg.max_batch_pairs and not self._closing:
                left = fill_by - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            now = time.monotonic()
            slices: list[tuple[_Job, int, int]] = []
            room = cfg.max_batch_pairs
            while self._jobs and room:
                job = self._jobs[0]
                if job.deadline is not None and job.deadline <= now:
                    self._drop_locked(job)
                    expired.append(job)
                    continue
                stop = min(len(job.docs), job.taken + room)
                slices.append((job, job.taken, stop))
                room -= stop - job.taken
                self._pending -= stop - job.taken
                job.taken = stop
                if job.taken == len(job.docs):
                    self._jobs.popleft()
            self._in_batch = sum(b - a for _, a, b in slices)
        for job in expired:
            job.done(None, DeadlineExceededError("the deadline passed while the request was queued; it was not scored"))
        self._report_depth()
        return slices

    def _score_isolated(self, slices: list[tuple[_Job, int, int]], exc: Exception) -> list[np.ndarray | None]:
        """The batch raised ``exc``: score each job's slice on its own; None where that still fails."""
        if len(slices) == 1:
            return [None]
        logger.warning("scoring a batch of %d requests failed (%s: %s); retrying each request on its own",
                       len(slices), type(exc).__name__, exc)
        out: list[np.ndarray | None] = []
        for job, a, b in slices:
            try:
                out.append(np.asarray(self.scorer.score_pairs(job.queries[a:b], job.docs[a:b])))
            except Exception:
                out.append(None)
        return out

    def _run(self) -> None:
        while True:
            slices = self._take_batch()
            if slices is None:
                return
            if not slices:
                continue
            queries = [q for job, a, b in slices for q in job.queries[a:b]]
            docs = [d for job, a, b in slices for d in job.docs[a:b]]
            t0 = time.perf_counter()
            try:
                scores = self.scorer.score_pairs(queries, docs)
                parts: list[np.ndarray | None] = []
                offset = 0
                for _, a, b in slices:
                    parts.append(scores[offset:offset + b - a])
                    offset += b - a
            except Exception as exc:  # one bad request must not fail the others, nor kill the worker
                parts = self._score_isolated(slices, exc)
                for (job, a, b), part in zip(slices, parts, strict=True):
                    if part is None:
                        logger.error("scoring %d pairs of one request failed: %s: %s", b - a, type(exc).__name__, exc,
                                     exc_info=len(slices) == 1)
                        err = ScoringError(f"scoring this request failed ({type(exc).__name__})")
                        err.__cause__ = exc
                        self._fail(job, err)
            else:
                elapsed = time.perf_counter() - t0
                if elapsed > 0:
                    sample = len(docs) / elapsed
                    a = self.config.rate_alpha
                    self._rate = sample if not self._rate else (1 - a) * self._rate + a * sample
                if self._on_batch is not None:
                    self._on_batch(len(docs), elapsed)
            for (job, a, b), part in zip(slices, parts, strict=True):
                if part is None or job.cancelled:
                    continue
                job.scores[a:b] = part
                job.finished += b - a
                if job.finished == len(job.docs):
                    job.done(job.scores, None)
            self._in_batch = 0

    def close(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting work, finish everything already queued, join the worker.

        Returns True when the worker finished within ``timeout`` seconds."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("batcher worker still busy after %.0f s at shutdown", timeout or 0)
            return False
        return True
