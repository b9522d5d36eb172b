"""Cross-request micro-batching with a bounded queue and per-request deadlines.

Requests from the event loop are queued as jobs; ONE worker thread takes pairs from the head of
the queue until ``max_batch_pairs`` or ``max_wait_ms`` after the first waiting pair, runs them
through the runtime in one call (which length-sorts them), and hands each job its slice of the
scores. One batch at a time with all cores in the session was the fastest setting on 2 cores.

Backpressure: the queue is bounded in *pairs* (a 100-document request costs 100x a 1-document one);
a job that does not fit raises :class:`QueueFullError` at once (the server answers 503 +
Retry-After) instead of letting latency grow without bound. A job whose deadline passes before
its pairs are computed is dropped with :class:`DeadlineExceededError` (504).
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

from distill.errors import ConfigError

__all__ = ["BatcherConfig", "DeadlineExceededError", "MicroBatcher", "QueueFullError", "Scorer", "ShuttingDownError"]

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray: ...


class QueueFullError(Exception):
    def __init__(self, pending: int, retry_after_s: float):
        super().__init__(f"{pending} pairs already queued")
        self.pending = pending
        self.retry_after_s = retry_after_s


class DeadlineExceededError(Exception):
    pass


class ShuttingDownError(Exception):
    pass


@dataclass(frozen=True)
class BatcherConfig:
    """``max_batch_pairs``: pairs per worker cycle (across requests). ``max_wait_ms``: how long the
    worker waits for more pairs after the first one arrives. ``max_queue_pairs``: pairs allowed to
    wait; must hold at least one full request (``>= max_docs`` of the server)."""

    max_batch_pairs: int = 64
    max_wait_ms: float = 2.0
    max_queue_pairs: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch_pairs < 1:
            raise ConfigError(f"max_batch_pairs={self.max_batch_pairs}: must be >= 1")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: must be >= 0 milliseconds")
        if self.max_queue_pairs < 1:
            raise ConfigError(f"max_queue_pairs={self.max_queue_pairs}: must be >= 1")


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
    """Thread-safe: :meth:`submit` (async) from the event loop, :meth:`submit_blocking` from threads."""

    def __init__(self, scorer: Scorer, config: BatcherConfig | None = None,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_queue_depth: Callable[[int], None] | None = None):
        self.scorer = scorer
        self.config = config or BatcherConfig()
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._jobs: deque[_Job] = deque()
        self._pending = 0  # pairs queued and not yet taken into a batch
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._sec_per_pair = 0.0  # EWMA, used for Retry-After and early deadline rejection
        self._thread = threading.Thread(target=self._run, name="distilrank-batcher", daemon=True)
        self._thread.start()

    @property
    def pending_pairs(self) -> int:
        return self._pending

    def estimated_wait_s(self, extra_pairs: int = 0) -> float:
        return (self._pending + extra_pairs) * self._sec_per_pair

    def _enqueue(self, queries: list[str], docs: list[str], deadline: float | None,
                 done: Callable[[np.ndarray | None, BaseException | None], None]) -> _Job:
        n = len(docs)
        with self._cond:
            if self._closing:
                raise ShuttingDownError("the server is shutting down")
            # an empty queue always takes one job, even one larger than the bound
            if self._pending and self._pending + n > self.config.max_queue_pairs:
                raise QueueFullError(self._pending, max(0.05, self.estimated_wait_s()))
            if deadline is not None and self._sec_per_pair:
                if time.monotonic() + self.estimated_wait_s(n) > deadline:
                    raise DeadlineExceededError(
                        f"about {self.estimated_wait_s(n) * 1000:.0f} ms of work is ahead of this request")
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
        except asyncio.CancelledError:  # client went away: do not compute for nobody
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
            job.cancelled = True
            if job in self._jobs:
                self._pending -= len(job.docs) - job.taken
                self._jobs.remove(job)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(self._pending)

    def _take_batch(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for work, then up to max_wait_ms for the batch to fill; return (job, start, stop) slices."""
        cfg = self.config
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
                if job.deadline is not None and job.deadline <= now and job.taken == 0:
                    self._jobs.popleft()
                    self._pending -= len(job.docs)
                    job.done(None, DeadlineExceededError("the deadline passed while the request was queued"))
                    continue
                stop = min(len(job.docs), job.taken + room)
                slices.append((job, job.taken, stop))
                room -= stop - job.taken
                self._pending -= stop - job.taken
                job.taken = stop
                if job.taken == len(job.docs):
                    self._jobs.popleft()
            self._busy = bool(slices)
        self._report_depth()
        return slices

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
            except Exception as exc:  # one bad batch must not kill the worker
                logger.exception("scoring a batch of %d pairs failed", len(docs))
                for job, _, _ in slices:
                    if not job.cancelled:
                        job.cancelled = True
                        job.done(None, exc)
                self._busy = False
                continue
            elapsed = time.perf_counter() - t0
            per_pair = elapsed / len(docs)
            self._sec_per_pair = per_pair if not self._sec_per_pair else 0.8 * self._sec_per_pair + 0.2 * per_pair
            if self._on_batch is not None:
                self._on_batch(len(docs), elapsed)
            offset = 0
            for job, a, b in slices:
                job.scores[a:b] = scores[offset:offset + b - a]
                offset += b - a
                job.finished += b - a
                if job.finished == len(job.docs) and not job.cancelled:
                    job.done(job.scores, None)
            self._busy = False

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting work, finish everything already queued, join the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("batcher worker still busy after %.0f s at shutdown", timeout or 0)
