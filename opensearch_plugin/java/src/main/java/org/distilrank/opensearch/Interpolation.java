package org.distilrank.opensearch;

import org.opensearch.core.xcontent.XContentBuilder;

import java.io.IOException;
import java.util.List;
import java.util.Map;

/**
 * The blend of first-stage and ranker scores one served model was measured with: the Java twin of
 * {@code distill.core.interpolation.Interpolation}. Per shard, over the window,
 * {@code final = w * norm_fs(first) + (1 - w) * norm_r(ranker)}; {@code depth} is the window it was tuned at and
 * {@code scoreConvention} the convention of the ranker scores the blend expects.
 */
record Interpolation(double firstStageWeight, String firstStageNorm, String rankerNorm, int depth,
                     String scoreConvention, String chosenBy) {

    /** The documented fallback (Interpolation.conservative): the first stage keeps the larger share. */
    static final double CONSERVATIVE_WEIGHT = 0.6;
    static final int CONSERVATIVE_DEPTH = 20;
    static final List<String> NORMS = List.of("minmax", "zscore", "none");
    static final List<String> CONVENTIONS = List.of("raw_logit", "sigmoid");

    Interpolation {
        checkWeight(firstStageWeight);
        checkOneOf("first_stage_norm", firstStageNorm, NORMS);
        checkOneOf("ranker_norm", rankerNorm, NORMS);
        checkOneOf("score_convention", scoreConvention, CONVENTIONS);
        if (depth < 1) {
            throw new IllegalArgumentException("[distilrank] interpolation depth must be >= 1, got [" + depth + "]");
        }
    }

    static void checkWeight(double w) {
        if (!Double.isFinite(w) || w < 0.0 || w > 1.0) {
            throw new IllegalArgumentException(
                "[distilrank] [first_stage_weight] must be a number in [0, 1], got [" + w + "]");
        }
    }

    static void checkOneOf(String name, String value, List<String> allowed) {
        if (value == null || !allowed.contains(value)) {
            throw new IllegalArgumentException("[distilrank] illegal " + name + " [" + value + "]; expected one of "
                + String.join(", ", allowed));
        }
    }

    /** Interpolation.conservative over the scores as the ranker serves them (nothing was tuned for either). */
    static Interpolation conservative(String servedConvention) {
        return new Interpolation(CONSERVATIVE_WEIGHT, "zscore", "zscore", CONSERVATIVE_DEPTH, servedConvention,
            "default");
    }

    /** From the {@code interpolation} object of the ranker's {@code GET /info}. */
    static Interpolation fromMap(Map<?, ?> m) {
        if (!(m.get("first_stage_weight") instanceof Number w)) {
            throw new IllegalArgumentException("interpolation.first_stage_weight is missing or not a number");
        }
        Object depth = m.get("depth");
        return new Interpolation(w.doubleValue(), string(m, "first_stage_norm", "minmax"),
            string(m, "ranker_norm", "none"), depth instanceof Number d ? d.intValue() : CONSERVATIVE_DEPTH,
            string(m, "score_convention", "raw_logit"), string(m, "chosen_by", "default"));
    }

    private static String string(Map<?, ?> m, String key, String fallback) {
        Object v = m.get(key);
        return v == null ? fallback : v.toString();
    }

    /** This interpolation with the values a rescore clause gives (null: keep the card's). */
    Interpolation override(Double weight, String fsNorm, String rNorm, Integer window, String convention) {
        return new Interpolation(weight != null ? weight : firstStageWeight, fsNorm != null ? fsNorm : firstStageNorm,
            rNorm != null ? rNorm : rankerNorm, window != null ? window : depth,
            convention != null ? convention : scoreConvention, chosenBy);
    }

    void toXContent(XContentBuilder b) throws IOException {
        b.startObject();
        b.field("first_stage_weight", firstStageWeight);
        b.field("first_stage_norm", firstStageNorm);
        b.field("ranker_norm", rankerNorm);
        b.field("depth", depth);
        b.field("score_convention", scoreConvention);
        b.field("chosen_by", chosenBy);
        b.endObject();
    }

    @Override
    public String toString() {
        return "first_stage_weight=" + firstStageWeight + ", first_stage_norm=" + firstStageNorm + ", ranker_norm="
            + rankerNorm + ", window=" + depth + ", score_convention=" + scoreConvention;
    }
}
