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
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Calls the rankers' Cohere-style {@code POST /v1/rerank}: round robin over the replicas, a consecutive-failure
 * circuit breaker per replica, and failover to the next replica on connection errors, timeouts, 429 and 5xx.
 * A malformed answer or another 4xx is not retried elsewhere (every replica would answer the same). Every failure
 * reaches the caller as a {@link RankerException}; callers fail open.
 *
 * <p>The served model's defaults ({@link ModelDefaults}) are read once from the first healthy replica's
 * {@code GET /info} and cached until the endpoints change; replicas whose card checksum differs are logged.
 */
public class RankerClient {
    private static final Logger logger = LogManager.getLogger(RankerClient.class);

    /** Any problem reaching a ranker or understanding its answer. */
    public static class RankerException extends Exception {
        final String kind;
        final boolean failover;

        RankerException(String kind, String message, Throwable cause) {
            this(kind, message, cause, false);
        }

        RankerException(String kind, String message, Throwable cause, boolean failover) {
            super(message, cause);
            this.kind = kind;
            this.failover = failover;
        }
    }

    /** One answer: scores by input index, the convention they are in ({@code meta.score}), who answered. */
    record Answer(double[] scores, String served, String endpoint) {}

    private volatile List<RankerEndpoint> endpoints;
    private volatile Duration connectTimeout;
    private volatile Duration readTimeout;
    private volatile int failureThreshold;
    private volatile long openDurationMillis;
    private volatile HttpClient http;
    private volatile ModelDefaults defaults;
    private final AtomicInteger next = new AtomicInteger();
    private final RankerStats stats = new RankerStats();

    RankerClient(Settings settings) {
        this.endpoints = build(DistilrankPlugin.endpoints(settings), List.of());
        this.connectTimeout = toDuration(DistilrankPlugin.CONNECT_TIMEOUT.get(settings));
        this.readTimeout = toDuration(DistilrankPlugin.READ_TIMEOUT.get(settings));
        this.failureThreshold = DistilrankPlugin.BREAKER_FAILURE_THRESHOLD.get(settings);
        this.openDurationMillis = DistilrankPlugin.BREAKER_OPEN_DURATION.get(settings).millis();
        this.http = null; // built lazily: the HttpClient must be created inside doPrivileged on the search thread
    }

    private static Duration toDuration(TimeValue value) {
        return Duration.ofMillis(value.millis());
    }

    /** Endpoint objects for {@code urls}, keeping the breaker and counters of replicas that stay. */
    private static List<RankerEndpoint> build(List<String> urls, List<RankerEndpoint> old) {
        List<RankerEndpoint> out = new ArrayList<>();
        for (String url : urls) {
            RankerEndpoint kept = null;
            for (RankerEndpoint e : old) {
                if (e.url.equals(url.replaceAll("/+$", ""))) kept = e;
            }
            out.add(kept != null ? kept : new RankerEndpoint(url));
        }
        return List.copyOf(out);
    }

    synchronized void setEndpoints(List<String> urls) {
        endpoints = build(urls, endpoints);
        for (RankerEndpoint e : endpoints) {
            e.cardSha256 = null;
            e.mismatchLogged.set(false);
        }
        defaults = null; // another model may be behind the new endpoints: read its card again
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
        for (RankerEndpoint e : endpoints) {
            e.resetBreaker();
        }
    }

    RankerStats stats() {
        return stats;
    }

    List<RankerEndpoint> endpoints() {
        return endpoints;
    }

    ModelDefaults cachedDefaults() {
        return defaults;
    }

    /** True when no replica can be called (every breaker is open). */
    boolean breakerOpen() {
        for (RankerEndpoint e : endpoints) {
            if (!e.breakerOpen()) return false;
        }
        return true;
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
     * Scores {@code documents} against {@code query} on the next replica in turn, failing over as described above.
     *
     * @throws RankerException when every breaker is open, or the last replica tried failed
     */
    Answer score(String query, List<String> documents) throws RankerException {
        long start = System.nanoTime();
        Answer answer = scoreOnSomeReplica(query, documents);
        stats.recordScored(documents.size(), (System.nanoTime() - start) / 1000);
        return answer;
    }

    private Answer scoreOnSomeReplica(String query, List<String> documents) throws RankerException {
        List<RankerEndpoint> eps = endpoints;
        int first = Math.floorMod(next.getAndIncrement(), eps.size());
        RankerException last = null;
        for (int k = 0; k < eps.size(); k++) {
            RankerEndpoint ep = eps.get((first + k) % eps.size());
            if (ep.breakerOpen()) continue;
            if (last != null) {
                stats.failovers.incrementAndGet();
                logger.debug("distilrank: failing over to {} after: {}", ep.url, last.getMessage());
            }
            ep.requests.incrementAndGet();
            long start = System.nanoTime();
            try {
                Answer answer = call(ep, query, documents);
                ep.recordSuccess(documents.size(), (System.nanoTime() - start) / 1000);
                checkCard(ep);
                return answer;
            } catch (RankerException e) {
                if (ep.recordFailure(e.kind, failureThreshold, openDurationMillis)) {
                    logger.warn("distilrank circuit breaker opened for {} ({}ms): {}", ep.url, openDurationMillis,
                        e.getMessage());
                }
                last = e;
                if (!e.failover) break;
                ep.failoversFrom.incrementAndGet();
            }
        }
        if (last == null) {
            throw new RankerException("breaker_open", "circuit breaker open on every ranker (" + eps.size()
                + ") after " + failureThreshold + " consecutive failures; retrying after " + openDurationMillis + "ms",
                null);
        }
        throw last;
    }

    private String body(String query, List<String> documents) throws RankerException {
        try (XContentBuilder builder = XContentFactory.jsonBuilder()) {
            builder.startObject().field("query", query).field("documents", documents).field("return_documents", false)
                .endObject();
            return BytesReference.bytes(builder).utf8ToString();
        } catch (IOException e) {
            throw new RankerException("request", "could not build the ranker request: " + e.getMessage(), e);
        }
    }

    private Answer call(RankerEndpoint ep, String query, List<String> documents) throws RankerException {
        URI uri = uri(ep, "/v1/rerank");
        HttpRequest request = HttpRequest.newBuilder(uri).timeout(readTimeout)
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body(query, documents), StandardCharsets.UTF_8)).build();
        HttpResponse<String> response = send(request, uri);
        if (response.statusCode() != 200) {
            String text = response.body();
            int status = response.statusCode();
            throw new RankerException("http_status", "ranker at " + uri + " answered HTTP " + status + ": "
                + text.substring(0, Math.min(200, text.length())), null, status >= 500 || status == 429);
        }
        Map<String, Object> map = json(response.body());
        double[] scores = parse(map, documents.size());
        return new Answer(scores, served(map), ep.url);
    }

    private static URI uri(RankerEndpoint ep, String path) throws RankerException {
        try {
            return URI.create(ep.url + path);
        } catch (IllegalArgumentException e) {
            throw new RankerException("request", "bad ranker endpoint [" + ep.url + "]: " + e.getMessage(), e);
        }
    }

    private HttpResponse<String> send(HttpRequest request, URI uri) throws RankerException {
        try {
            return AccessController.doPrivilegedChecked(
                () -> http().send(request, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8)));
        } catch (java.net.http.HttpTimeoutException e) {
            throw new RankerException("timeout", "ranker at " + uri + " did not answer within "
                + readTimeout.toMillis() + "ms", e, true);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RankerException("connection", "interrupted while calling the ranker at " + uri, e);
        } catch (Exception e) {
            throw new RankerException("connection", "ranker at " + uri + " unreachable: " + e, e, true);
        }
    }

    private static Map<String, Object> json(String text) throws RankerException {
        try {
            return XContentHelper.convertToMap(JsonXContent.jsonXContent, text, false);
        } catch (Exception e) {
            throw new RankerException("malformed", "ranker answer is not JSON: " + e.getMessage(), e);
        }
    }

    /** The convention of the answer's scores from {@code meta.score}; null when the ranker does not say. */
    private static String served(Map<String, Object> map) {
        if (map.get("meta") instanceof Map<?, ?> meta && meta.get("score") instanceof String s
            && Interpolation.CONVENTIONS.contains(s)) {
            return s;
        }
        return null;
    }

    /** Parses {@code {"results": [{"index": i, "relevance_score": s}, ...]}} into scores by input index. */
    static double[] parse(Map<String, Object> map, int expected) throws RankerException {
        if (!(map.get("results") instanceof List<?> results)) {
            throw new RankerException("malformed", "ranker answer has no \"results\" list", null);
        }
        if (results.size() != expected) {
            throw new RankerException("malformed", "ranker returned " + results.size() + " results for " + expected
                + " documents", null);
        }
        double[] scores = new double[expected];
        boolean[] seen = new boolean[expected];
        for (Object o : results) {
            if (!(o instanceof Map<?, ?> r) || !(r.get("index") instanceof Number idx)
                || !(r.get("relevance_score") instanceof Number s)) {
                throw new RankerException("malformed",
                    "each result needs a numeric \"index\" and \"relevance_score\"", null);
            }
            int i = idx.intValue();
            if (i < 0 || i >= expected || seen[i]) {
                throw new RankerException("malformed", "result index " + i + " out of range or repeated", null);
            }
            double v = s.doubleValue();
            if (!Double.isFinite(v)) {
                throw new RankerException("malformed", "relevance_score for index " + i + " is not finite", null);
            }
            seen[i] = true;
            scores[i] = v;
        }
        return scores;
    }

    /**
     * The served model's defaults, read from the first replica (in configured order, breaker closed) whose
     * {@code GET /info} answers, and cached until the endpoints change.
     */
    ModelDefaults defaults() throws RankerException {
        ModelDefaults d = defaults;
        if (d != null) return d;
        synchronized (this) {
            if (defaults != null) return defaults;
            RankerException last = null;
            for (RankerEndpoint ep : endpoints) {
                if (ep.breakerOpen()) continue;
                try {
                    Map<String, Object> info = info(ep);
                    ModelDefaults read = ModelDefaults.fromInfo(info, ep.url);
                    ep.cardSha256 = read.cardSha256();
                    defaults = read;
                    logger.info("distilrank: model defaults from {}: {}", ep.url, read.interpolation());
                    for (RankerEndpoint other : endpoints) checkCard(other);
                    return read;
                } catch (RankerException e) {
                    ep.recordFailure("info", failureThreshold, openDurationMillis);
                    last = e;
                }
            }
            throw new RankerException("info", "no ranker answered GET /info, so the model card's defaults are unknown"
                + (last == null ? " (every breaker is open)" : ": " + last.getMessage()), last);
        }
    }

    /** {@link #defaults()}, or null (logged) when no replica answers. */
    ModelDefaults defaultsOrNull() {
        try {
            return defaults();
        } catch (RankerException e) {
            logger.warn("distilrank: {}", e.getMessage());
            return null;
        }
    }

    private Map<String, Object> info(RankerEndpoint ep) throws RankerException {
        URI uri = uri(ep, "/info");
        HttpResponse<String> response = send(HttpRequest.newBuilder(uri).timeout(readTimeout).GET().build(), uri);
        if (response.statusCode() != 200) {
            throw new RankerException("http_status", "GET " + uri + " answered HTTP " + response.statusCode(), null);
        }
        return json(response.body());
    }

    /** Reads a replica's card checksum once and warns when it differs from the card the defaults came from. */
    private void checkCard(RankerEndpoint ep) {
        ModelDefaults d = defaults;
        if (d == null) return;
        if (ep.cardSha256 == null && !ep.breakerOpen()) {
            try {
                Object sha = info(ep).get("card_sha256");
                ep.cardSha256 = sha instanceof String s ? s : "";
            } catch (RankerException e) {
                ep.cardSha256 = "";
                logger.warn("distilrank: could not read GET /info of {} to compare its model card: {}", ep.url,
                    e.getMessage());
            }
        }
        warnOnMismatch(ep, d);
    }

    private static void warnOnMismatch(RankerEndpoint ep, ModelDefaults d) {
        String sha = ep.cardSha256;
        if (sha != null && !sha.isEmpty() && !sha.equals(d.cardSha256()) && !ep.url.equals(d.source())
            && ep.mismatchLogged.compareAndSet(false, true)) {
            logger.warn("distilrank: ranker replicas serve different models: {} reports card_sha256 {} but {} "
                + "(where the defaults were read) reports {}; every replica must serve the same export", ep.url, sha,
                d.source(), d.cardSha256());
        }
    }
}
