package org.distilrank.opensearch;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.core.xcontent.XContentBuilder;

import java.io.IOException;
import java.util.Map;

/**
 * What a rescore clause leaves out, read from the served model's card through the ranker's {@code GET /info}:
 * the interpolation (or, for a card without one, {@link Interpolation#conservative}), the convention the ranker
 * serves ({@code score}) and the card's checksum.
 */
record ModelDefaults(Interpolation interpolation, String served, String cardSha256, String source, boolean fallback) {
    private static final Logger logger = LogManager.getLogger(ModelDefaults.class);

    static ModelDefaults fromInfo(Map<?, ?> info, String source) {
        String served = info.get("score") instanceof String s && Interpolation.CONVENTIONS.contains(s) ? s : "sigmoid";
        String sha = info.get("card_sha256") instanceof String s ? s : "";
        if (info.get("interpolation") instanceof Map<?, ?> m) {
            return new ModelDefaults(Interpolation.fromMap(m), served, sha, source, false);
        }
        Interpolation fallback = Interpolation.conservative(served);
        logger.warn("distilrank: the ranker at {} serves a model card without an interpolation (an older export); "
            + "using the documented defaults {} until the endpoints change", source, fallback);
        return new ModelDefaults(fallback, served, sha, source, true);
    }

    void toXContent(XContentBuilder b) throws IOException {
        b.startObject();
        b.field("source", source);
        b.field("card_sha256", cardSha256);
        b.field("score", served);
        b.field("fallback", fallback);
        b.field("interpolation");
        interpolation.toXContent(b);
        b.endObject();
    }
}
