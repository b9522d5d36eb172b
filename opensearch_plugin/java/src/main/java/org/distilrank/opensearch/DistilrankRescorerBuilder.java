package org.distilrank.opensearch;

import org.opensearch.core.ParseField;
import org.opensearch.core.common.ParsingException;
import org.opensearch.core.common.io.stream.StreamInput;
import org.opensearch.core.common.io.stream.StreamOutput;
import org.opensearch.core.xcontent.XContentBuilder;
import org.opensearch.core.xcontent.XContentParser;
import org.opensearch.index.query.QueryRewriteContext;
import org.opensearch.index.query.QueryShardContext;
import org.opensearch.search.rescore.RescoreContext;
import org.opensearch.search.rescore.RescorerBuilder;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;

/**
 * {@code "rescore": {"window_size": N, "distilrank": {"query_text": "...", "fields": ["title", "text"],
 * "query_weight": 1.0, "rescore_query_weight": 1.0, "score_mode": "total"}}}.
 * Invalid parameters raise {@link ParsingException} / {@link IllegalArgumentException}, which OpenSearch answers with 400.
 */
public class DistilrankRescorerBuilder extends RescorerBuilder<DistilrankRescorerBuilder> {
    public static final String NAME = "distilrank";
    static final ParseField QUERY_TEXT = new ParseField("query_text");
    static final ParseField FIELDS = new ParseField("fields");
    static final ParseField QUERY_WEIGHT = new ParseField("query_weight");
    static final ParseField RESCORE_QUERY_WEIGHT = new ParseField("rescore_query_weight");
    static final ParseField SCORE_MODE = new ParseField("score_mode");

    private final String queryText;
    private final List<String> fields;
    private final float queryWeight;
    private final float rescoreQueryWeight;
    private final ScoreMode scoreMode;

    public DistilrankRescorerBuilder(String queryText, List<String> fields, float queryWeight, float rescoreQueryWeight,
                                     ScoreMode scoreMode) {
        if (queryText == null || queryText.isBlank()) {
            throw new IllegalArgumentException("[distilrank] requires a non-empty [query_text]");
        }
        if (fields == null || fields.isEmpty()) {
            throw new IllegalArgumentException("[distilrank] requires [fields]: a non-empty list of _source field names, e.g. [\"title\", \"text\"]");
        }
        for (String f : fields) {
            if (f == null || f.isBlank()) {
                throw new IllegalArgumentException("[distilrank] [fields] must not contain empty names");
            }
        }
        if (!Float.isFinite(queryWeight) || !Float.isFinite(rescoreQueryWeight)) {
            throw new IllegalArgumentException("[distilrank] [query_weight] and [rescore_query_weight] must be finite numbers");
        }
        this.queryText = queryText;
        this.fields = List.copyOf(fields);
        this.queryWeight = queryWeight;
        this.rescoreQueryWeight = rescoreQueryWeight;
        this.scoreMode = Objects.requireNonNull(scoreMode);
    }

    public DistilrankRescorerBuilder(StreamInput in) throws IOException {
        super(in);
        queryText = in.readString();
        fields = in.readStringList();
        queryWeight = in.readFloat();
        rescoreQueryWeight = in.readFloat();
        scoreMode = ScoreMode.values()[in.readVInt()];
    }

    @Override
    protected void doWriteTo(StreamOutput out) throws IOException {
        out.writeString(queryText);
        out.writeStringCollection(fields);
        out.writeFloat(queryWeight);
        out.writeFloat(rescoreQueryWeight);
        out.writeVInt(scoreMode.ordinal());
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    @Override
    protected void doXContent(XContentBuilder builder, Params params) throws IOException {
        builder.startObject(NAME);
        builder.field(QUERY_TEXT.getPreferredName(), queryText);
        builder.field(FIELDS.getPreferredName(), fields);
        builder.field(QUERY_WEIGHT.getPreferredName(), queryWeight);
        builder.field(RESCORE_QUERY_WEIGHT.getPreferredName(), rescoreQueryWeight);
        builder.field(SCORE_MODE.getPreferredName(), scoreMode.toString());
        builder.endObject();
    }

    public static DistilrankRescorerBuilder fromXContent(XContentParser parser) throws IOException {
        String queryText = null;
        List<String> fields = null;
        float queryWeight = 1.0f;
        float rescoreQueryWeight = 1.0f;
        ScoreMode scoreMode = ScoreMode.TOTAL;
        String current = null;
        XContentParser.Token token;
        while ((token = parser.nextToken()) != XContentParser.Token.END_OBJECT) {
            if (token == XContentParser.Token.FIELD_NAME) {
                current = parser.currentName();
            } else if (token == XContentParser.Token.START_ARRAY && FIELDS.match(current, parser.getDeprecationHandler())) {
                fields = new ArrayList<>();
                while (parser.nextToken() != XContentParser.Token.END_ARRAY) {
                    if (parser.currentToken() != XContentParser.Token.VALUE_STRING) {
                        throw new ParsingException(parser.getTokenLocation(), "[distilrank] [fields] must be a list of strings");
                    }
                    fields.add(parser.text());
                }
            } else if (token.isValue()) {
                if (QUERY_TEXT.match(current, parser.getDeprecationHandler())) {
                    queryText = parser.text();
                } else if (FIELDS.match(current, parser.getDeprecationHandler()) && token == XContentParser.Token.VALUE_STRING) {
                    fields = List.of(parser.text());
                } else if (QUERY_WEIGHT.match(current, parser.getDeprecationHandler())) {
                    queryWeight = number(parser, current);
                } else if (RESCORE_QUERY_WEIGHT.match(current, parser.getDeprecationHandler())) {
                    rescoreQueryWeight = number(parser, current);
                } else if (SCORE_MODE.match(current, parser.getDeprecationHandler())) {
                    scoreMode = ScoreMode.fromString(parser.text());
                } else {
                    throw new ParsingException(parser.getTokenLocation(), "[distilrank] unknown parameter [" + current
                        + "]; expected one of query_text, fields, query_weight, rescore_query_weight, score_mode");
                }
            } else {
                throw new ParsingException(parser.getTokenLocation(), "[distilrank] unexpected " + token + " for [" + current + "]");
            }
        }
        return new DistilrankRescorerBuilder(queryText, fields, queryWeight, rescoreQueryWeight, scoreMode);
    }

    private static float number(XContentParser parser, String name) throws IOException {
        if (parser.currentToken() != XContentParser.Token.VALUE_NUMBER) {
            throw new ParsingException(parser.getTokenLocation(), "[distilrank] [" + name + "] must be a number, got [" + parser.text() + "]");
        }
        return parser.floatValue();
    }

    @Override
    public RescorerBuilder<DistilrankRescorerBuilder> rewrite(QueryRewriteContext ctx) {
        return this;
    }

    @Override
    protected RescoreContext innerBuildContext(int windowSize, QueryShardContext context) {
        return new DistilrankRescorer.Context(windowSize, queryText, fields, queryWeight, rescoreQueryWeight, scoreMode,
            DistilrankPlugin.client());
    }

    @Override
    public boolean equals(Object o) {
        if (!super.equals(o)) return false;
        DistilrankRescorerBuilder other = (DistilrankRescorerBuilder) o;
        return queryText.equals(other.queryText) && fields.equals(other.fields) && queryWeight == other.queryWeight
            && rescoreQueryWeight == other.rescoreQueryWeight && scoreMode == other.scoreMode;
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), queryText, fields, queryWeight, rescoreQueryWeight, scoreMode);
    }

    /** Same arithmetic as OpenSearch's {@code QueryRescoreMode}; inputs are already multiplied by their weights. */
    public enum ScoreMode {
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
            throw new IllegalArgumentException("[distilrank] illegal score_mode [" + value + "]; expected one of total, multiply, avg, max, min");
        }

        @Override
        public String toString() {
            return name().toLowerCase(Locale.ROOT);
        }
    }
}
