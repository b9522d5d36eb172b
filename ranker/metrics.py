"""Prometheus metrics, one registry per app (so several apps in one process do not collide)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["RankerMetrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class RankerMetrics:
    """Names are prefixed ``distilrank_``; latencies are in seconds, batch sizes in pairs."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram("distilrank_request_latency_seconds",
                                         "Rerank request latency (end to end in the server)",
                                         ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        # every response of every endpoint, 5xx included; status 499 = the client left before any response
        self.requests = Counter("distilrank_requests", "Requests answered, by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.batch_size = Histogram("distilrank_batch_size_pairs", "Pairs per inference batch (across requests)",
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.batch_latency = Histogram("distilrank_batch_latency_seconds", "Inference time per batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("distilrank_queue_depth_pairs", "Pairs waiting for the inference worker", registry=r)
        self.queue_requests = Gauge("distilrank_queue_depth_requests", "Requests waiting for the inference worker",
                                    registry=r)
        self.service_rate = Gauge("distilrank_service_rate_pairs_per_second",
                                  "Measured scoring rate (EWMA over batches) used for admission control", registry=r)
        self.dropped_at_shutdown = Counter("distilrank_dropped_at_shutdown",
                                           "Requests still in flight when the graceful shutdown timeout hit",
                                           registry=r)
        self.errors = Counter("distilrank_errors", "Error responses by type", ["type"], registry=r)
        self.cache_hits = Counter("distilrank_cache_hits", "Scores served from the score cache", registry=r)
        self.cache_misses = Counter("distilrank_cache_misses", "Scores computed because the cache missed", registry=r)
        self.cache_hit_ratio = Gauge("distilrank_cache_hit_ratio", "Cache hits / lookups since start (0 when off)",
                                     registry=r)
        self._hits = 0
        self._lookups = 0

    def observe_batch(self, pairs: int, seconds: float) -> None:
        self.batch_size.observe(pairs)
        self.batch_latency.observe(seconds)

    def observe_queue(self, pairs: int, requests: int) -> None:
        self.queue_depth.set(pairs)
        self.queue_requests.set(requests)

    def observe_cache(self, hits: int, misses: int) -> None:
        self.cache_hits.inc(hits)
        self.cache_misses.inc(misses)
        self._hits += hits
        self._lookups += hits + misses
        if self._lookups:
            self.cache_hit_ratio.set(self._hits / self._lookups)

    def render(self) -> bytes:
        return generate_latest(self.registry)
