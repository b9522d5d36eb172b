package org.distilrank.opensearch;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.unit.TimeValue;
import org.opensearch.common.xcontent.XContentFactory;
import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.json.JsonXContent;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.secure_sm.AccessController;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Calls the ranker's Cohere-style {@code POST /v1/rerank} and guards it with a consecutive-failure circuit breaker.
 * Every failure is returned as a {@link RankerException}; callers fail open.
 */
public class RankerClient {
    private static final Logger logger = LogManager.getLogger(RankerClient.class);

    /** Any problem reaching the ranker or understanding its answer. */
    public static class RankerException extends Exception {
        final String kind;

        RankerException(String kind, String message, Throwable cause) {
            super(message, cause);
            this.kind = kind;
        }
    }

    private volatile String endpoint;
    private volatile Duration connectTimeout;
    private volatile Duration readTimeout;
    private volatile int failureThreshold;
    private volatile long openDurationMillis;
    private volatile HttpClient http;

    private final AtomicInteger consecutiveFailures = new AtomicInteger();
    private volatile long openUntilMillis = 0;
    private final RankerStats stats = new RankerStats();

    RankerClient(Settings settings) {
        this.endpoint = DistilrankPlugin.ENDPOINT.get(settings);
        this.connectTimeout = toDuration(DistilrankPlugin.CONNECT_TIMEOUT.get(settings));
        this.readTimeout = toDuration(DistilrankPlugin.READ_TIMEOUT.get(settings));
        this.failureThreshold = DistilrankPlugin.BREAKER_FAILURE_THRESHOLD.get(settings);
        this.openDurationMillis = DistilrankPlugin.BREAKER_OPEN_DURATION.get(settings).millis();
        this.http = null; // built lazily: the HttpClient must be created inside doPrivileged on the search thread
    }

    private static Duration toDuration(TimeValue value) {
        return Duration.ofMillis(value.millis());
    }

    void setEndpoint(String value) {
        endpoint = value;
    }

    void setConnectTimeout(TimeValue value) {
        connectTimeout = toDuration(value);
        http = null;
    }

    void setReadTimeout(TimeValue value) {
        readTimeout = toDuration(value);
    }

    void setFailureThreshold(int value) {
        failureThreshold = value;
    }

    void setOpenDuration(TimeValue value) {
        openDurationMillis = value.millis();
        openUntilMillis = 0;
        consecutiveFailures.set(0);
    }

    RankerStats stats() {
        return stats;
    }

    boolean breakerOpen() {
        return System.currentTimeMillis() < openUntilMillis;
    }

    private HttpClient http() {
        HttpClient h = http;
        if (h == null) {
            h = HttpClient.newBuilder().connectTimeout(connectTimeout).version(HttpClient.Version.HTTP_1_1).build();
            http = h;
        }
        return h;
    }

    /**
     * Scores {@code documents} against {@code query}. Returns one score per document, in input order.
     *
     * @throws RankerException when the breaker is open, the call fails, times out, or the answer is malformed
     */
    public float[] score(String query, List<String> documents) throws RankerException {
        stats.requests.incrementAndGet();
        if (breakerOpen()) {
            stats.recordFailure("breaker_open");
            throw new RankerException("breaker_open", "circuit breaker open after " + failureThreshold
                + " consecutive ranker failures; retrying after " + openDurationMillis + "ms", null);
        }
        long start = System.nanoTime();
        try {
            float[] scores = call(query, documents);
            consecutiveFailures.set(0);
            stats.successes.incrementAndGet();
            stats.documents.addAndGet(documents.size());
            stats.latencyMicros.addAndGet((System.nanoTime() - start) / 1000);
            return scores;
        } catch (RankerException e) {
            stats.recordFailure(e.kind);
            if (consecutiveFailures.incrementAndGet() >= failureThreshold) {
                openUntilMillis = System.currentTimeMillis() + openDurationMillis;
                consecutiveFailures.set(0);
                stats.breakerTrips.incrementAndGet();
                logger.warn("distilrank circuit breaker opened for {}ms", openDurationMillis);
            }
            throw e;
        }
    }

    private float[] call(String query, List<String> documents) throws RankerException {
        final String body;
        try (XContentBuilder builder = XContentFactory.jsonBuilder()) {
            builder.startObject().field("query", query).field("documents", documents).field("return_documents", false).endObject();
            body = BytesReference.bytes(builder).utf8ToString();
        } catch (IOException e) {
            throw new RankerException("request", "could not build the ranker request: " + e.getMessage(), e);
        }
        final URI uri;
        try {
            uri = URI.create(endpoint.replaceAll("/+$", "") + "/v1/rerank");
        } catch (IllegalArgumentException e) {
            throw new RankerException("request", "bad ranker endpoint [" + endpoint + "]: " + e.getMessage(), e);
        }
        HttpRequest request = HttpRequest.newBuilder(uri)
            .timeout(readTimeout)
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body, StandardCharsets.UTF_8))
            .build();
        final HttpResponse<String> response;
        try {
            response = AccessController.doPrivilegedChecked(
                () -> http().send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8)));
        } catch (java.net.http.HttpTimeoutException e) {
            throw new RankerException("timeout", "ranker at " + uri + " did not answer within " + readTimeout.toMillis() + "ms", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RankerException("connection", "interrupted while calling the ranker at " + uri, e);
        } catch (Exception e) {
            throw new RankerException("connection", "ranker at " + uri + " unreachable: " + e, e);
        }
        if (response.statusCode() != 200) {
            String text = response.body();
            throw new RankerException("http_status", "ranker answered HTTP " + response.statusCode() + ": "
                + text.substring(0, Math.min(200, text.length())), null);
        }
        return parse(response.body(), documents.size());
    }

    /** Parses {@code {"results": [{"index": i, "relevance_score": s}, ...]}} into scores by input index. */
    static float[] parse(String json, int expected) throws RankerException {
        final Map<String, Object> map;
        try {
            map = XContentHelper.convertToMap(JsonXContent.jsonXContent, json, false);
        } catch (Exception e) {
            throw new RankerException("malformed", "ranker answer is not JSON: " + e.getMessage(), e);
        }
        if (!(map.get("results") instanceof List<?> results)) {
            throw new RankerException("malformed", "ranker answer has no \"results\" list", null);
        }
        if (results.size() != expected) {
            throw new RankerException("malformed", "ranker returned " + results.size() + " results for " + expected + " documents", null);
        }
        float[] scores = new float[expected];
        boolean[] seen = new boolean[expected];
        for (Object o : results) {
            if (!(o instanceof Map<?, ?> r) || !(r.get("index") instanceof Number idx) || !(r.get("relevance_score") instanceof Number s)) {
                throw new RankerException("malformed", "each result needs a numeric \"index\" and \"relevance_score\"", null);
            }
            int i = idx.intValue();
            if (i < 0 || i >= expected || seen[i]) {
                throw new RankerException("malformed", "result index " + i + " out of range or repeated", null);
            }
            float v = s.floatValue();
            if (!Float.isFinite(v)) {
                throw new RankerException("malformed", "relevance_score for index " + i + " is not finite", null);
            }
            seen[i] = true;
            scores[i] = v;
        }
        return scores;
    }

    /** Node-local counters behind {@code GET /_plugins/distilrank/stats}. */
    static class RankerStats {
        final AtomicLong requests = new AtomicLong();
        final AtomicLong successes = new AtomicLong();
        final AtomicLong failures = new AtomicLong();
        final AtomicLong documents = new AtomicLong();
        final AtomicLong latencyMicros = new AtomicLong();
        final AtomicLong breakerTrips = new AtomicLong();
        final Map<String, AtomicLong> failuresByKind = new java.util.concurrent.ConcurrentHashMap<>();

        void recordFailure(String kind) {
            failures.incrementAndGet();
            failuresByKind.computeIfAbsent(kind, k -> new AtomicLong()).incrementAndGet();
        }

        void toXContent(XContentBuilder b) throws IOException {
            RankerClient c = DistilrankPlugin.client();
            b.startObject();
            b.field("endpoint", c.endpoint);
            b.field("requests", requests.get());
            b.field("successes", successes.get());
            b.field("failures", failures.get());
            b.startObject("failures_by_kind");
            for (Map.Entry<String, AtomicLong> e : failuresByKind.entrySet()) {
                b.field(e.getKey(), e.getValue().get());
            }
            b.endObject();
            b.field("documents_scored", documents.get());
            b.field("total_latency_ms", latencyMicros.get() / 1000.0);
            b.field("breaker_trips", breakerTrips.get());
            b.field("breaker_open", c.breakerOpen());
            b.endObject();
        }
    }
}
