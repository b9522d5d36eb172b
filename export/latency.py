"""Latency of one rerank request (1 query x N passages) measured on this machine.

Numbers from a shared, busy machine are noisy: compare configurations measured side by side in one
process, never against a number from another run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from distill.core.cross_encoder import CrossEncoderScorer
from export.scorers import Pair

__all__ = ["measure_interleaved", "measure_latency", "measure_load"]

logger = logging.getLogger(__name__)


def measure_latency(scorer: CrossEncoderScorer, pairs: Sequence[Pair], pairs_per_call: int, reps: int,
                    warmup: int = 2) -> dict[str, float]:
    """Wall time of scoring ``pairs`` end to end (tokenisation and length bucketing included), in milliseconds."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    scorer = scorer.with_pairs_per_call(pairs_per_call)
    for _ in range(warmup):
        scorer.score_pairs(pairs)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        scorer.score_pairs(pairs)
        times.append(1000.0 * (time.perf_counter() - t0))
    arr = np.asarray(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
            "mean_ms": float(arr.mean()), "reps": float(reps), "pairs": float(len(pairs)),
            "pairs_per_call": float(pairs_per_call)}


def measure_interleaved(scorers: Mapping[str, CrossEncoderScorer], pairs: Sequence[Pair], reps: int,
                        warmup: int = 2) -> dict[str, dict[str, float]]:
    """:func:`measure_latency` of several scorers (each at its own pairs per call) in interleaved rounds: every round
    times one call of each, in a rotating order, so that a burst of load elsewhere on a shared machine falls on all
    of them alike. Every scorer is warmed up ``warmup`` times first (a compiled model allocates on first use)."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    names = list(scorers)
    if not names:
        return {}
    for _ in range(warmup):
        for name in names:
            scorers[name].score_pairs(pairs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t0 = time.perf_counter()
            scorers[name].score_pairs(pairs)
            times[name].append(1000.0 * (time.perf_counter() - t0))
    out = {}
    for name, ts in times.items():
        arr = np.asarray(ts)
        out[name] = {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
                     "mean_ms": float(arr.mean()), "reps": float(reps), "pairs": float(len(pairs)),
                     "pairs_per_call": float(scorers[name].pairs_per_call)}
    return out


def measure_load(scorer: CrossEncoderScorer, requests: Sequence[Sequence[Pair]], users: int,
                 reps: int) -> dict[str, float]:
    """Per-request wall time (ms) and throughput with ``users`` threads, each sending ``reps`` x every request back
    to back, starting at a different request (the scorer is shared, as a server shares its session)."""
    for req in requests[:2]:
        scorer.score_pairs(req)
    times: list[float] = []
    lock = threading.Lock()

    def user(offset: int) -> None:
        for _ in range(reps):
            for k in range(len(requests)):
                req = requests[(k + offset) % len(requests)]
                t0 = time.perf_counter()
                scorer.score_pairs(req)
                with lock:
                    times.append(1000 * (time.perf_counter() - t0))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    arr = np.asarray(times)
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
            "pairs_per_s": float(sum(len(r) for r in requests) * reps * users / wall), "n": len(times)}
