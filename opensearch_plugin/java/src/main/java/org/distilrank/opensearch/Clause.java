package org.distilrank.opensearch;

import org.opensearch.core.common.io.stream.StreamInput;
import org.opensearch.core.common.io.stream.StreamOutput;
import org.opensearch.core.xcontent.XContentBuilder;

import java.io.IOException;
import java.util.List;
import java.util.Locale;

/**
 * The parameters of one {@code distilrank} rescore clause, validated. A null value was not given: the
 * interpolation's values then come from the served model's card, the QueryRescorer weights default to 1.
 */
record Clause(String queryText, List<String> fields, ScoreMode scoreMode, Float queryWeight, Float rescoreQueryWeight,
              Double firstStageWeight, String firstStageNorm, String rankerNorm, String scoreConvention) {

    static final List<String> KEYS = List.of("query_text", "fields", "score_mode", "first_stage_weight",
        "first_stage_norm", "ranker_norm", "score_convention", "query_weight", "rescore_query_weight");

    Clause {
        if (queryText == null || queryText.isBlank()) {
            throw new IllegalArgumentException("[distilrank] requires a non-empty [query_text]");
        }
        if (fields == null || fields.isEmpty()) {
            throw new IllegalArgumentException(
                "[distilrank] requires [fields]: a non-empty list of _source field names, e.g. [\"title\", \"text\"]");
        }
        for (String f : fields) {
            if (f == null || f.isBlank()) {
                throw new IllegalArgumentException("[distilrank] [fields] must not contain empty names");
            }
        }
        fields = List.copyOf(fields);
        scoreMode = scoreMode == null ? ScoreMode.INTERPOLATE : scoreMode;
        checkFinite("query_weight", queryWeight);
        checkFinite("rescore_query_weight", rescoreQueryWeight);
        if (firstStageWeight != null) Interpolation.checkWeight(firstStageWeight);
        if (firstStageNorm != null) Interpolation.checkOneOf("first_stage_norm", firstStageNorm, Interpolation.NORMS);
        if (rankerNorm != null) Interpolation.checkOneOf("ranker_norm", rankerNorm, Interpolation.NORMS);
        if (scoreConvention != null) {
            Interpolation.checkOneOf("score_convention", scoreConvention, Interpolation.CONVENTIONS);
        }
        checkModeParameters(scoreMode, queryWeight, rescoreQueryWeight, firstStageWeight, firstStageNorm, rankerNorm,
            scoreConvention);
    }

    private static void checkFinite(String name, Float value) {
        if (value != null && !Float.isFinite(value)) {
            throw new IllegalArgumentException("[distilrank] [" + name + "] must be a finite number");
        }
    }

    /** Weights of one arithmetic given with the other's score mode are refused rather than silently ignored. */
    private static void checkModeParameters(ScoreMode mode, Float qw, Float rqw, Double w, String fsNorm, String rNorm,
                                            String conv) {
        if (mode == ScoreMode.INTERPOLATE && (qw != null || rqw != null)) {
            throw new IllegalArgumentException("[distilrank] [query_weight] and [rescore_query_weight] apply to "
                + "score_mode total, multiply, avg, max and min; score_mode interpolate (the default) takes "
                + "[first_stage_weight]");
        }
        if (mode != ScoreMode.INTERPOLATE && (w != null || fsNorm != null || rNorm != null || conv != null)) {
            throw new IllegalArgumentException("[distilrank] [first_stage_weight], [first_stage_norm], [ranker_norm] "
                + "and [score_convention] apply to score_mode interpolate, not [" + mode + "]");
        }
    }

    /** True when a value must come from the served model's card. */
    boolean needsCard() {
        return scoreMode == ScoreMode.INTERPOLATE
            && (firstStageWeight == null || firstStageNorm == null || rankerNorm == null || scoreConvention == null);
    }

    /** The interpolation to apply: the card's {@code defaults} (may be null when the clause gives every value). */
    Interpolation interpolation(ModelDefaults defaults, int windowSize) {
        if (defaults == null) {
            return new Interpolation(firstStageWeight, firstStageNorm, rankerNorm, windowSize, scoreConvention,
                "default");
        }
        return defaults.interpolation()
            .override(firstStageWeight, firstStageNorm, rankerNorm, windowSize, scoreConvention);
    }

    float queryWeightOrDefault() {
        return queryWeight == null ? 1.0f : queryWeight;
    }

    float rescoreQueryWeightOrDefault() {
        return rescoreQueryWeight == null ? 1.0f : rescoreQueryWeight;
    }

    static Clause readFrom(StreamInput in) throws IOException {
        return new Clause(in.readString(), in.readStringList(), ScoreMode.values()[in.readVInt()],
            in.readOptionalFloat(), in.readOptionalFloat(), in.readOptionalDouble(), in.readOptionalString(),
            in.readOptionalString(), in.readOptionalString());
    }

    void writeTo(StreamOutput out) throws IOException {
        out.writeString(queryText);
        out.writeStringCollection(fields);
        out.writeVInt(scoreMode.ordinal());
        out.writeOptionalFloat(queryWeight);
        out.writeOptionalFloat(rescoreQueryWeight);
        out.writeOptionalDouble(firstStageWeight);
        out.writeOptionalString(firstStageNorm);
        out.writeOptionalString(rankerNorm);
        out.writeOptionalString(scoreConvention);
    }

    void toXContent(XContentBuilder b) throws IOException {
        b.field("query_text", queryText);
        b.field("fields", fields);
        b.field("score_mode", scoreMode.toString());
        if (queryWeight != null) b.field("query_weight", queryWeight);
        if (rescoreQueryWeight != null) b.field("rescore_query_weight", rescoreQueryWeight);
        if (firstStageWeight != null) b.field("first_stage_weight", firstStageWeight);
        if (firstStageNorm != null) b.field("first_stage_norm", firstStageNorm);
        if (rankerNorm != null) b.field("ranker_norm", rankerNorm);
        if (scoreConvention != null) b.field("score_convention", scoreConvention);
    }

    /**
     * {@code interpolate}: the blend of {@link Interpolation}. The others: OpenSearch's {@code QueryRescoreMode}
     * arithmetic, inputs already multiplied by their weights.
     */
    public enum ScoreMode {
        INTERPOLATE { float combine(float p, float s) { throw new UnsupportedOperationException("interpolate"); } },
        TOTAL { float combine(float p, float s) { return p + s; } },
        MULTIPLY { float combine(float p, float s) { return p * s; } },
        AVG { float combine(float p, float s) { return (p + s) / 2; } },
        MAX { float combine(float p, float s) { return Math.max(p, s); } },
        MIN { float combine(float p, float s) { return Math.min(p, s); } };

        abstract float combine(float primary, float secondary);

        static ScoreMode fromString(String value) {
            for (ScoreMode m : values()) {
                if (m.toString().equals(value)) return m;
            }
            throw new IllegalArgumentException("[distilrank] illegal score_mode [" + value
                + "]; expected one of interpolate, total, multiply, avg, max, min");
        }

        @Override
        public String toString() {
            return name().toLowerCase(Locale.ROOT);
        }
    }
}
