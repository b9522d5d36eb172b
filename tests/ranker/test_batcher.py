"""MicroBatcher unit tests with a deterministic fake scorer (score = float(doc)) -- no model needed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from distill.core.errors import ConfigError
from ranker.batcher import (
    BatcherConfig,
    DeadlineExceededError,
    MicroBatcher,
    OverloadedError,
    QueueFullError,
    ScoringError,
    ShuttingDownError,
    pair_cost,
)


class FakeScorer:
    """score(q, d) = float(d) + 1000 * float(q); records every batch; optionally blocks until released."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list[tuple[str, str]]] = []
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        self.gate.wait(10)
        self.batches.append(list(zip(queries, docs, strict=True)))
        time.sleep(self.delay_s)
        return np.array([float(d) + 1000 * float(q) for q, d in zip(queries, docs, strict=True)], dtype=np.float32)


def test_concurrent_requests_share_batches_and_get_their_own_scores():
    scorer = FakeScorer()
    scorer.gate.clear()  # hold the worker so all requests queue up, then release them together
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=8, max_wait_ms=20, max_queue_pairs=1000))

    async def main() -> list[np.ndarray]:
        tasks = [asyncio.create_task(batcher.submit(str(q), [str(d) for d in range(q + 1)])) for q in range(6)]
        await asyncio.sleep(0.05)
        scorer.gate.set()
        return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    for q, scores in enumerate(results):
        np.testing.assert_array_equal(scores, [d + 1000 * q for d in range(q + 1)])
    sizes = [len(b) for b in scorer.batches]
    assert sum(sizes) == 21 and max(sizes) <= 8
    assert len(sizes) < 6, f"requests were not batched together: {sizes}"


def test_request_larger_than_batch_is_split():
    scorer = FakeScorer()
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=4, max_wait_ms=0, max_queue_pairs=100))
    try:
        scores = batcher.submit_blocking("0", [str(d) for d in range(10)])
    finally:
        batcher.close()
    np.testing.assert_array_equal(scores, np.arange(10))
    assert [len(b) for b in scorer.batches] == [4, 4, 2]


def test_queue_full_is_immediate_and_recovers():
    scorer = FakeScorer()
    scorer.gate.clear()
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=2, max_wait_ms=0, max_queue_pairs=4))

    async def main() -> None:
        first = asyncio.create_task(batcher.submit("0", ["1", "2"]))  # taken by the (blocked) worker
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.submit("0", ["3", "4", "5"]))
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(QueueFullError) as info:
            await batcher.submit("0", ["6", "7"])
        assert time.monotonic() - t0 < 1.0 and info.value.pending == 3
        scorer.gate.set()
        np.testing.assert_array_equal(await first, [1, 2])
        np.testing.assert_array_equal(await queued, [3, 4, 5])
        np.testing.assert_array_equal(await batcher.submit("0", ["6", "7"]), [6, 7])  # recovered

    try:
        asyncio.run(main())
    finally:
        batcher.close()


def test_deadline_exceeded_while_queued_drops_the_work():
    scorer = FakeScorer()
    scorer.gate.clear()
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=1, max_wait_ms=0, max_queue_pairs=100))

    async def main() -> None:
        blocker = asyncio.create_task(batcher.submit("0", ["1"]))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceededError, match="deadline passed"):
            await batcher.submit("0", ["2", "3"], deadline=time.monotonic() + 0.05)
        assert batcher.pending_pairs == 0
        scorer.gate.set()
        await blocker

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    assert [p for b in scorer.batches for p in b] == [("0", "1")], "expired work must not be computed"


def test_close_finishes_queued_work_then_refuses():
    scorer = FakeScorer(delay_s=0.02)
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=2, max_wait_ms=0, max_queue_pairs=100))
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda q=q: results.append(batcher.submit_blocking(str(q), ["1", "2", "3"])))
               for q in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.02)
    batcher.close()
    for t in threads:
        t.join(5)
    assert len(results) == 3
    with pytest.raises(ShuttingDownError, match="shutting down"):
        batcher.submit_blocking("0", ["1"])


def test_scorer_failure_reaches_caller_and_worker_survives():
    class Boom(FakeScorer):
        def score_pairs(self, queries, docs):
            if "bad" in docs:
                raise RuntimeError("onnx exploded")
            return super().score_pairs(queries, docs)

    batcher = MicroBatcher(Boom(), BatcherConfig(max_batch_pairs=8, max_wait_ms=0))
    try:
        with pytest.raises(ScoringError, match="scoring this request failed \(RuntimeError\)"):
            batcher.submit_blocking("0", ["bad"])
        np.testing.assert_array_equal(batcher.submit_blocking("0", ["5"]), [5])
    finally:
        batcher.close()


class Boom(FakeScorer):
    """Raises on any batch that holds the document "bad" (as the tokenizer did on a lone surrogate)."""

    def score_pairs(self, queries, docs):
        if "bad" in docs:
            self.gate.wait(10)
            self.batches.append(list(zip(queries, docs, strict=True)))
            raise RuntimeError("onnx exploded")
        return super().score_pairs(queries, docs)


def test_one_failing_request_does_not_fail_its_batch_mates():
    scorer = Boom()
    scorer.gate.clear()  # queue all requests first so they share one batch
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=64, max_wait_ms=50, max_queue_pairs=100))

    async def main() -> list[np.ndarray | BaseException]:
        tasks = [asyncio.create_task(batcher.submit(str(q), ["bad" if q == 2 else str(q), "7"])) for q in range(1, 5)]
        await asyncio.sleep(0.1)
        scorer.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert len(scorer.batches[0]) == 8, "the four requests were meant to share one batch"
    assert [len(b) for b in scorer.batches[1:]] == [2, 2, 2, 2], "then each request on its own"
    assert isinstance(results[1], ScoringError) and "RuntimeError" in str(results[1])
    for q, r in zip((1, 3, 4), (results[0], results[2], results[3]), strict=True):
        np.testing.assert_array_equal(r, [q + 1000 * q, 7 + 1000 * q])


def test_queue_is_bounded_in_requests_not_only_pairs():
    scorer = FakeScorer()
    scorer.gate.clear()
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=1, max_wait_ms=0, max_queue_pairs=1000,
                                                 max_queue_requests=2))

    async def main() -> None:
        taken = asyncio.create_task(batcher.submit("0", ["1"]))  # the worker holds it
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit("0", [str(d)])) for d in (2, 3)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match=r"1 pairs in 2 requests already queued \(limit on requests\)|"
                                                 r"2 pairs in 2 requests already queued \(limit on requests\)"):
            await batcher.submit("0", ["4"])
        scorer.gate.set()
        await taken
        await asyncio.gather(*queued)

    try:
        asyncio.run(main())
    finally:
        batcher.close()


def test_admission_rejects_when_expected_wait_exceeds_the_deadline():
    scorer = FakeScorer(delay_s=0.05)
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=4, max_wait_ms=0, max_queue_pairs=1000))

    async def main() -> None:
        await batcher.submit("0", ["1", "2", "3", "4"])  # measures the service rate: about 4 pairs / 0.05 s
        assert 20 < batcher.service_rate < 100
        scorer.gate.clear()
        held = [asyncio.create_task(batcher.submit("0", [str(d) for d in range(4)])) for _ in range(5)]
        await asyncio.sleep(0.02)
        # ~16-20 pairs ahead at ~80 pairs/s: ~0.25 s of work, so a 100 ms deadline cannot be met
        t0 = time.monotonic()
        with pytest.raises(OverloadedError, match="ms of work is ahead of this request") as info:
            await batcher.submit("0", ["9"], deadline=time.monotonic() + 0.1)
        assert time.monotonic() - t0 < 0.05, "the rejection must be immediate"
        assert info.value.retry_after_s > 0
        # a request without a deadline, or with enough time, is still admitted
        late = asyncio.create_task(batcher.submit("0", ["9"], deadline=time.monotonic() + 5))
        scorer.gate.set()
        await asyncio.gather(*held, late)

    try:
        asyncio.run(main())
    finally:
        batcher.close()


def test_worker_drops_expired_requests_unscored():
    """The worker itself answers a queued job whose deadline has passed (no event-loop timer involved)."""
    scorer = FakeScorer()
    scorer.gate.clear()
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=1, max_wait_ms=0, max_queue_pairs=100))
    errors: list[BaseException] = []

    def expiring() -> None:
        try:
            batcher.submit_blocking("0", ["2"], deadline=time.monotonic() + 0.05)
        except DeadlineExceededError as exc:
            errors.append(exc)

    first = threading.Thread(target=lambda: batcher.submit_blocking("0", ["1"]))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=expiring)
    second.start()
    time.sleep(0.1)  # its deadline passes while the worker is held
    scorer.gate.set()
    first.join(5)
    second.join(5)
    batcher.close()
    assert len(errors) == 1 and "not scored" in str(errors[0])
    assert [p for b in scorer.batches for p in b] == [("0", "1")], "expired work must not be computed"


def test_config_validation():
    with pytest.raises(ConfigError, match="max_batch_pairs=0"):
        BatcherConfig(max_batch_pairs=0)
    with pytest.raises(ConfigError, match="max_wait_ms=-1"):
        BatcherConfig(max_wait_ms=-1)
    with pytest.raises(ConfigError, match="max_queue_pairs=0"):
        BatcherConfig(max_queue_pairs=0)
    with pytest.raises(ConfigError, match="max_queue_requests=0"):
        BatcherConfig(max_queue_requests=0)
    with pytest.raises(ConfigError, match="max_batch_tokens=0"):
        BatcherConfig(max_batch_tokens=0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="max_wait_ms=.*finite"):
            BatcherConfig(max_wait_ms=bad)


class RecordingScorer:
    """Scores 0.0; records which request (its query) each pair of each batch came from; each batch takes
    ``delay_s`` so that requests arrive while one is being scored."""

    def __init__(self, delay_s: float = 0.005):
        self.batches: list[list[str]] = []
        self.delay_s = delay_s

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        self.batches.append(list(queries))
        time.sleep(self.delay_s)
        return np.zeros(len(docs), dtype=np.float32)


def test_a_small_request_waits_behind_at_most_one_chunk_of_a_large_one():
    """A 3-document request that arrives while a 200-document request of long texts is being scored is in the
    next batch (it waits for the batch in progress only), not behind the rest of the large request."""
    scorer = RecordingScorer()
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=64, max_batch_tokens=1000, max_wait_ms=0,
                                                 max_queue_pairs=10_000))
    long_text = "word " * 200  # about 253 estimated tokens: 3 such pairs fill the token budget

    async def main() -> int:
        big = asyncio.create_task(batcher.submit("big", [long_text] * 200))
        while len(scorer.batches) < 3:
            await asyncio.sleep(0.001)
        seen = len(scorer.batches)
        await batcher.submit("small", ["a", "b", "c"])
        await big
        return seen

    try:
        seen = asyncio.run(main())
    finally:
        batcher.close()
    small_in = [i for i, batch in enumerate(scorer.batches) if "small" in batch]
    assert len(small_in) == 1 and small_in[0] <= seen + 1, (seen, small_in, len(scorer.batches))
    assert all(batch.count("big") <= 3 for batch in scorer.batches), "each batch holds one chunk of the large request"
    assert sum(batch.count("big") for batch in scorer.batches) == 200


def test_waiting_requests_share_each_batch_round_robin():
    """Three large requests waiting together: every batch holds a chunk of each, none is served only after
    another has finished."""
    scorer = RecordingScorer(delay_s=0.0)
    release = threading.Event()
    score = scorer.score_pairs
    scorer.score_pairs = lambda q, d: (release.wait(10), score(q, d))[1]  # type: ignore[method-assign]
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=30, max_wait_ms=0, max_queue_pairs=10_000))

    async def main() -> None:
        first = asyncio.create_task(batcher.submit("first", ["x"]))  # holds the worker while the others queue
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(name, ["x"] * 40)) for name in ("a", "b", "c")]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(first, *rest)

    try:
        asyncio.run(main())
    finally:
        batcher.close()
    batches = scorer.batches[1:]
    assert [batches[0].count(name) for name in "abc"] == [10, 10, 10], batches[0]  # 30 pairs shared equally
    finished_at = {name: max(i for i, b in enumerate(batches) if name in b) for name in "abc"}
    assert len(set(finished_at.values())) == 1, (finished_at, [len(b) for b in batches])


def test_a_batch_fits_the_token_budget_or_one_pair_per_request():
    scorer = RecordingScorer(delay_s=0.0)
    batcher = MicroBatcher(scorer, BatcherConfig(max_batch_pairs=64, max_batch_tokens=50, max_wait_ms=0))
    try:
        batcher.submit_blocking("q", ["x" * 100] * 5)  # 29 estimated tokens each
        batcher.submit_blocking("q", ["x" * 1000])     # 254: over the budget alone, still scored
    finally:
        batcher.close()
    assert [len(b) for b in scorer.batches] == [1, 1, 1, 1, 1, 1]
    assert pair_cost("q", "x" * 100) == 29
