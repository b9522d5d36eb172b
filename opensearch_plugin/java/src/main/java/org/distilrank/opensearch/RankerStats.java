package org.distilrank.opensearch;

import org.opensearch.core.xcontent.XContentBuilder;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Node-local counters behind {@code GET /_plugins/distilrank/stats}. The top level counts rescore calls (one per
 * shard and search): {@code failures} are the calls that failed open. {@code endpoints} counts attempts per replica,
 * so a call that failed over shows one failure on the replica it left and one success on the one that answered.
 */
final class RankerStats {
    final AtomicLong requests = new AtomicLong();
    final AtomicLong successes = new AtomicLong();
    final AtomicLong failures = new AtomicLong();
    final AtomicLong documents = new AtomicLong();
    final AtomicLong latencyMicros = new AtomicLong();
    final AtomicLong failovers = new AtomicLong();
    final Map<String, AtomicLong> failuresByKind = new ConcurrentHashMap<>();

    /** The ranker scored a window: documents and the time it took (failovers included). */
    void recordScored(int docs, long micros) {
        documents.addAndGet(docs);
        latencyMicros.addAndGet(micros);
    }

    void recordSuccess() {
        requests.incrementAndGet();
        successes.incrementAndGet();
    }

    /** A rescore call that failed open; {@code kind} names why (the last replica's failure, or info, source). */
    void recordFailure(String kind) {
        requests.incrementAndGet();
        failures.incrementAndGet();
        failuresByKind.computeIfAbsent(kind, k -> new AtomicLong()).incrementAndGet();
    }

    void toXContent(XContentBuilder b, RankerClient c) throws IOException {
        List<RankerEndpoint> endpoints = c.endpoints();
        long trips = 0;
        for (RankerEndpoint e : endpoints) trips += e.breakerTrips.get();
        b.startObject();
        b.field("endpoint", endpoints.get(0).url);
        b.field("requests", requests.get());
        b.field("successes", successes.get());
        b.field("failures", failures.get());
        b.startObject("failures_by_kind");
        for (Map.Entry<String, AtomicLong> e : failuresByKind.entrySet()) {
            b.field(e.getKey(), e.getValue().get());
        }
        b.endObject();
        b.field("failovers", failovers.get());
        b.field("documents_scored", documents.get());
        b.field("total_latency_ms", latencyMicros.get() / 1000.0);
        b.field("breaker_trips", trips);
        b.field("breaker_open", c.breakerOpen());
        b.startArray("endpoints");
        for (RankerEndpoint e : endpoints) e.toXContent(b);
        b.endArray();
        ModelDefaults d = c.cachedDefaults();
        boolean mismatch = false;
        for (RankerEndpoint e : endpoints) {
            String sha = e.cardSha256;
            mismatch |= d != null && sha != null && !sha.isEmpty() && !sha.equals(d.cardSha256());
        }
        b.field("card_mismatch", mismatch);
        if (d == null) {
            b.nullField("model");
        } else {
            b.field("model");
            d.toXContent(b);
        }
        b.endObject();
    }
}
