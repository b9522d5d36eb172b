package org.distilrank.opensearch;

import org.opensearch.core.xcontent.XContentBuilder;

import java.io.IOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/** One ranker replica: its circuit breaker (consecutive failures) and its counters (node-local). */
final class RankerEndpoint {
    final String url;
    private final AtomicInteger consecutiveFailures = new AtomicInteger();
    private volatile long openUntilMillis = 0;
    /** The card checksum its /info reported; null until read, "" when /info could not be read. */
    volatile String cardSha256;
    /** Set once the warning that this replica serves another card has been logged. */
    final AtomicBoolean mismatchLogged = new AtomicBoolean();

    final AtomicLong requests = new AtomicLong();
    final AtomicLong successes = new AtomicLong();
    final AtomicLong failures = new AtomicLong();
    final AtomicLong documents = new AtomicLong();
    final AtomicLong latencyMicros = new AtomicLong();
    final AtomicLong breakerTrips = new AtomicLong();
    final AtomicLong failoversFrom = new AtomicLong();
    final Map<String, AtomicLong> failuresByKind = new ConcurrentHashMap<>();

    RankerEndpoint(String url) {
        this.url = url.replaceAll("/+$", "");
    }

    boolean breakerOpen() {
        return System.currentTimeMillis() < openUntilMillis;
    }

    void resetBreaker() {
        openUntilMillis = 0;
        consecutiveFailures.set(0);
    }

    void recordSuccess(int docs, long micros) {
        consecutiveFailures.set(0);
        successes.incrementAndGet();
        documents.addAndGet(docs);
        latencyMicros.addAndGet(micros);
    }

    /** Counts a failure; returns true when it opened the breaker. */
    boolean recordFailure(String kind, int threshold, long openMillis) {
        failures.incrementAndGet();
        failuresByKind.computeIfAbsent(kind, k -> new AtomicLong()).incrementAndGet();
        if (consecutiveFailures.incrementAndGet() >= threshold) {
            openUntilMillis = System.currentTimeMillis() + openMillis;
            consecutiveFailures.set(0);
            breakerTrips.incrementAndGet();
            return true;
        }
        return false;
    }

    void toXContent(XContentBuilder b) throws IOException {
        b.startObject();
        b.field("url", url);
        b.field("requests", requests.get());
        b.field("successes", successes.get());
        b.field("failures", failures.get());
        b.startObject("failures_by_kind");
        for (Map.Entry<String, AtomicLong> e : failuresByKind.entrySet()) {
            b.field(e.getKey(), e.getValue().get());
        }
        b.endObject();
        b.field("failovers_from", failoversFrom.get());
        b.field("documents_scored", documents.get());
        b.field("total_latency_ms", latencyMicros.get() / 1000.0);
        b.field("breaker_trips", breakerTrips.get());
        b.field("breaker_open", breakerOpen());
        b.field("card_sha256", cardSha256 == null || cardSha256.isEmpty() ? null : cardSha256);
        b.endObject();
    }
}
