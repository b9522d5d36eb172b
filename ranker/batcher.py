"""Cross-request micro-batching with fair scheduling, admission control and per-request deadlines.

Requests from the event loop are queued as jobs; ONE worker thread builds each batch from the jobs waiting,
runs it through the runtime in one call (which length-sorts it), and hands each job its slice of the scores.
One batch at a time with all cores in the session was the fastest setting on 2 cores.

Fair scheduling: every request is split into chunks, and the requests waiting take turns, round robin. A batch
is bounded by ``max_batch_pairs`` pairs and by ``max_batch_tokens`` estimated tokens (about 4 characters per
token, uncapped, since the tokenizer reads a whole text before it truncates); each waiting request gets an equal
share of it, and what the others leave goes to the requests that have more. Only the request that starts a batch
may pass the token budget, with a single pair: a pair too long to share a batch gets one of its own. So a request
never waits behind more than one chunk of any other: a 3-document request that arrives while a 1000-document
request of 20,000-character texts is being scored waits for the batch in progress (one long pair), then gets a
batch, not the rest of the large request. The worker waits up to ``max_wait_ms`` after the first pair arrives for
a batch to fill.

Admission control protects goodput (pairs answered within their deadline), not just memory:

* the queue is bounded in *requests* (``max_queue_requests``: 64 one-document requests are 64
  event-loop tasks and 64 responses to write) and in *pairs* (``max_queue_pairs``: a 100-document
  request costs 100x a 1-document one); a job that does not fit raises :class:`QueueFullError` at
  once (503 + Retry-After);
* the worker measures its service rate in pairs/s (an EWMA over batches). A job with a deadline
  whose expected completion -- (pairs queued + pairs in the running batch + its own pairs) / rate --
  falls after that deadline (less ``deadline_headroom``) raises :class:`OverloadedError` at admission
  (503 + Retry-After): accepting it would spend compute on an answer that arrives too late;
* a queued job whose deadline has passed is dropped before it is scored
  (:class:`DeadlineExceededError`, 504), so no compute goes to answers nobody waits for.

Failure isolation: if scoring a batch raises, each request of the batch is retried on its own and
only the request(s) whose own pairs still fail get the error (:class:`ScoringError`); the others get
their scores. One bad request can never fail the requests it happened to share a batch with.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
        super().__init__(f"{pending} pairs in {queued_requests} requests already queued (limit on {limit})",
                         retry_after_s)
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


#: characters per token in the cost estimate of a pair (the tokenizer reads every character, truncation or not)
CHARS_PER_TOKEN = 4


def pair_cost(query: str, doc: str) -> int:
    """Estimated tokens of a pair, for sharing batches fairly: ``ceil(characters / 4)`` plus 3 special tokens."""
    return -(-(len(query) + len(doc)) // CHARS_PER_TOKEN) + 3


@dataclass(frozen=True)
class BatcherConfig:
    """``max_batch_pairs``: pairs per worker cycle (across requests). ``max_batch_tokens``: estimated tokens per
    cycle (:func:`pair_cost`), shared among the waiting requests. ``max_wait_ms``: how long the
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
    max_batch_tokens: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_batch_pairs", "max_queue_pairs", "max_queue_requests", "max_batch_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise ConfigError(f"max_wait_ms={self.max_wait_ms}: must be a finite number >= 0 milliseconds")
        if not (math.isfinite(self.rate_alpha) and 0 < self.rate_alpha <= 1):
            raise ConfigError(f"rate_alpha={self.rate_alpha}: must be in (0, 1]")
        if not (math.isfinite(self.deadline_headroom) and 0 < self.deadline_headroom <= 1):
            raise ConfigError(f"deadline_headroom={self.deadline_headroom}: must be in (0, 1]")


@dataclass(eq=False)
class _Job:
    queries: list[str]
    docs: list[str]
    deadline: float | None
    done: Callable[[np.ndarray | None, BaseException | None], None]
    costs: list[int] = field(init=False)  # pair_cost of each pair
    scores: np.ndarray = field(init=False)
    taken: int = 0      # pairs handed to a batch so far
    finished: int = 0   # pairs scored so far
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.costs = [pair_cost(q, d) for q, d in zip(self.queries, self.docs, strict=True)]
        self.scores = np.empty(len(self.docs), dtype=np.float32)

    @property
    def untaken_cost(self) -> int:
        return sum(self.costs[self.taken:])


#: (job, start, stop): the job's pairs start..stop in one batch
_Slice = tuple[_Job, int, int]


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
        self._pending_tokens = 0  # their estimated tokens
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
        job = _Job(queries, docs, deadline, done)
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
            self._jobs.append(job)
            self._pending += n
            self._pending_tokens += job.untaken_cost
            self._cond.notify()
        self._report_depth()
        return job

    async def submit(self, query: str | Sequence[str], docs: Sequence[str],
                     deadline: float | None = None) -> np.ndarray:
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
            self._pending_tokens -= job.untaken_cost
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

    def _take_batch(self) -> list[_Slice] | None:
        """Wait for work, then up to max_wait_ms for the batch to fill; return the batch as (job, start, stop)
        slices (see :meth:`_plan_locked`). Jobs whose deadline has passed are answered with
        DeadlineExceededError here, unscored. None when closing and drained."""
        cfg = self.config
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if not self._jobs:
                return None
            fill_by = time.monotonic() + cfg.max_wait_ms / 1000
            while (self._pending < cfg.max_batch_pairs and self._pending_tokens < cfg.max_batch_tokens
                   and not self._closing):
                left = fill_by - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            now = time.monotonic()
            expired = [job for job in self._jobs if job.deadline is not None and job.deadline <= now]
            for job in expired:
                self._drop_locked(job)
            slices = self._plan_locked()
            self._in_batch = sum(b - a for _, a, b in slices)
        for job in expired:
            job.done(None, DeadlineExceededError("the deadline passed while the request was queued; it was not "
                                                 "scored"))
        self._report_depth()
        return slices

    def _plan_locked(self) -> list[_Slice]:
        """One batch: a chunk of each waiting job that fits, round robin (caller holds the lock).

        Each job gets an equal share of the batch's pairs and tokens, in queue order; then the room left over goes
        to the jobs that have more, in the same order. The first job always gets at least one pair, so a batch
        holds at most ``max_batch_tokens`` estimated tokens, or one pair that alone is longer. Jobs served move to
        the back of the queue, so the next batch starts with the ones this one could not reach."""
        cfg = self.config
        jobs = list(self._jobs)
        if not jobs:  # every job waiting had expired
            return []
        stops = {id(job): job.taken for job in jobs}
        room = [cfg.max_batch_pairs, cfg.max_batch_tokens]
        share = (max(1, cfg.max_batch_pairs // len(jobs)), max(1, cfg.max_batch_tokens // len(jobs)))
        for k, job in enumerate(jobs):
            if not room[0]:
                break
            # only the batch's first job may pass the budget (with one pair): a pair too long for the rest of
            # the budget waits for a batch it starts, so no batch costs more than the budget or one pair
            stops[id(job)] = _extend(job, job.taken, share[0], min(share[1], room[1]), room, at_least_one=k == 0)
        for job in jobs:
            if not room[0] or room[1] <= 0:
                break
            stops[id(job)] = _extend(job, stops[id(job)], room[0], room[1], room, at_least_one=False)
        slices = [(job, job.taken, stops[id(job)]) for job in jobs if stops[id(job)] > job.taken]
        for job, a, b in slices:
            self._pending -= b - a
            self._pending_tokens -= sum(job.costs[a:b])
            job.taken = b
        served = {id(job) for job, _, _ in slices}
        self._jobs = deque([job for job in jobs if id(job) not in served] +
                           [job for job in jobs if id(job) in served and job.taken < len(job.docs)])
        return slices

    def _score_isolated(self, slices: list[_Slice], exc: Exception) -> list[np.ndarray | Exception]:
        """The batch raised ``exc``: score each job's slice on its own; its own exception where that still fails."""
        if len(slices) == 1:
            return [exc]
        logger.warning("scoring a batch of %d requests failed (%s: %s); retrying each request on its own",
                       len(slices), type(exc).__name__, exc)
        out: list[np.ndarray | Exception] = []
        for job, a, b in slices:
            try:
                out.append(np.asarray(self.scorer.score_pairs(job.queries[a:b], job.docs[a:b])))
            except Exception as own:
                out.append(own)
        return out

    def _score(self, slices: list[_Slice]) -> list[np.ndarray | Exception]:
        """Each slice's scores, or the exception that scoring it alone raised."""
        queries = [q for job, a, b in slices for q in job.queries[a:b]]
        docs = [d for job, a, b in slices for d in job.docs[a:b]]
        t0 = time.perf_counter()
        try:
            scores = self.scorer.score_pairs(queries, docs)
        except Exception as exc:  # one bad request must not fail the others, nor kill the worker
            return self._score_isolated(slices, exc)
        elapsed = time.perf_counter() - t0
        if elapsed > 0:
            sample = len(docs) / elapsed
            alpha = self.config.rate_alpha
            self._rate = sample if not self._rate else (1 - alpha) * self._rate + alpha * sample
        if self._on_batch is not None:
            self._on_batch(len(docs), elapsed)
        bounds = np.cumsum([0] + [b - a for _, a, b in slices])
        return [scores[bounds[k]:bounds[k + 1]] for k in range(len(slices))]

    def _run(self) -> None:
        while True:
            slices = self._take_batch()
            if slices is None:
                return
            if not slices:
                continue
            for (job, a, b), part in zip(slices, self._score(slices), strict=True):
                if isinstance(part, Exception):
                    logger.error("scoring %d pairs of one request failed: %s: %s", b - a, type(part).__name__, part,
                                 exc_info=part)
                    detail = f": {part}" if getattr(part, "public_message", False) else ""
                    err = ScoringError(f"scoring this request failed ({type(part).__name__}{detail})")
                    err.__cause__ = part
                    self._fail(job, err)
                    continue
                if job.cancelled:
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


def _extend(job: _Job, stop: int, pairs: int, budget: int, room: list[int], at_least_one: bool) -> int:
    """Add up to ``pairs`` of the job's next pairs to a batch while they fit ``budget`` tokens and ``room`` (pairs,
    tokens left in the batch, updated in place); the first pair always fits when ``at_least_one``. Returns the
    new stop."""
    spent = 0
    end = min(len(job.docs), stop + pairs)
    while stop < end and room[0]:
        cost = job.costs[stop]
        if spent + cost > budget and not (at_least_one and spent == 0):
            break
        spent += cost
        room[0] -= 1
        room[1] -= cost
        stop += 1
    return stop
