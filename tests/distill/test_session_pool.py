"""A pool of backends over one model: batches of one call run in parallel, each backend runs one batch at a
time, scores come back in input order and equal one backend's, an error in a batch reaches the caller; and
the session-layout rule the ranker, the export gates and bench.speed share."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from distill.core.cross_encoder import (
    MAX_AUTO_SESSIONS,
    CrossEncoderScorer,
    PairEncoder,
    TokenCaps,
    session_layout,
)
from distill.core.errors import ConfigError

DOCS = [f"document number {i} " + "filler " * (i % 7) for i in range(23)]


class RecordingBackend:
    """Scores a batch as the sum of its token ids (a pure function of the pair), and records overlap."""

    def __init__(self, delay_s: float = 0.002):
        self.delay_s = delay_s
        self.busy = threading.Lock()
        self.overlapped = False
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        if not self.busy.acquire(blocking=False):
            self.overlapped = True
            self.busy.acquire()
        try:
            self.calls += 1
            self.threads.add(threading.get_ident())
            time.sleep(self.delay_s)
            return (batch["input_ids"] * batch["attention_mask"]).sum(axis=1).astype(np.float32)
        finally:
            self.busy.release()


@pytest.fixture(scope="module")
def encoder(tiny_cross_encoder_dir) -> PairEncoder:
    return PairEncoder(tiny_cross_encoder_dir, TokenCaps(max_seq_len=32, max_query_tokens=8))


def test_pool_scores_equal_one_backend_in_input_order(encoder: PairEncoder) -> None:
    single = CrossEncoderScorer(encoder, RecordingBackend(0), pairs_per_call=1).score(["q"] * len(DOCS), DOCS)
    backends = [RecordingBackend() for _ in range(3)]
    pooled = CrossEncoderScorer(encoder, backends[0], pairs_per_call=1, replicas=backends[1:])
    try:
        got = pooled.score(["q"] * len(DOCS), DOCS)
        np.testing.assert_array_equal(got, single)
        assert len(set(got.tolist())) > 5, "the fake scores must tell documents apart"
        assert sum(b.calls for b in backends) == len(DOCS)
        assert sum(1 for b in backends if b.calls) >= 2, "the batches must be spread over the pool"
        # two callers at once (two HTTP users, bench.speed's u2) share the pool; no backend runs two batches
        results: list[np.ndarray] = []
        callers = [threading.Thread(target=lambda: results.append(pooled.score(["q"] * len(DOCS), DOCS)))
                   for _ in range(2)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()
        assert len(results) == 2 and all(np.array_equal(r, single) for r in results)
        assert not any(b.overlapped for b in backends)
        # another pairs_per_call keeps the same backends
        assert pooled.with_pairs_per_call(4).backends == pooled.backends
        np.testing.assert_array_equal(pooled.with_pairs_per_call(4).score(["q"] * len(DOCS), DOCS), single)
    finally:
        pooled.close()
    pooled.close()  # idempotent
    np.testing.assert_array_equal(pooled.score(["q"] * 3, DOCS[:3]), single[:3])  # and usable again
    pooled.close()


def test_pool_error_reaches_the_caller(encoder: PairEncoder) -> None:
    def broken(batch: dict[str, np.ndarray]) -> np.ndarray:
        raise RuntimeError("onnxruntime failed")

    scorer = CrossEncoderScorer(encoder, broken, pairs_per_call=1, replicas=[RecordingBackend()])
    try:
        with pytest.raises(RuntimeError, match="onnxruntime failed"):
            scorer.score(["q"] * 6, DOCS[:6])
    finally:
        scorer.close()


@pytest.mark.parametrize(("per_call", "threads", "sessions", "cores", "expected"), [
    (1, None, None, 2, (2, 1)),       # one pair per call: a single-thread session per core
    (1, None, None, 64, (MAX_AUTO_SESSIONS, 8)),  # at most 8 sessions, the cores shared among them
    (16, None, None, 2, (1, 2)),      # batches: one session with all cores
    (None, None, None, 4, (1, 4)),
    (1, 2, None, 2, (1, 2)),          # threads given: the old single-session layout
    (16, None, 2, 4, (2, 2)),         # sessions given: cores shared among them
    (16, 3, 2, 4, (2, 3)),
])
def test_session_layout(per_call, threads, sessions, cores, expected) -> None:
    assert session_layout(per_call, threads, sessions, cores) == expected


def test_session_layout_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="sessions=0"):
        session_layout(1, None, 0)
    with pytest.raises(ConfigError, match="threads=0"):
        session_layout(1, 0, None)


def test_warmup_runs_every_backend(encoder: PairEncoder) -> None:
    backends = [RecordingBackend(0) for _ in range(3)]
    scorer = CrossEncoderScorer(encoder, backends[0], pairs_per_call=1, replicas=backends[1:])
    scorer.warmup(["warm up"] * 2, ["short", "long " * 64])
    assert [b.calls for b in backends] == [2, 2, 2]  # both pairs (one per call) on each backend
