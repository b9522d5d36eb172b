package org.distilrank.opensearch;

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
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * {@code "rescore": {"window_size": N, "distilrank": {"query_text": "...", "fields": ["title", "text"],
 * "score_mode": "interpolate", "first_stage_weight": 0.6, "first_stage_norm": "zscore", "ranker_norm": "zscore"}}}.
 * Every interpolation value and {@code window_size} may be left out: they then come from the served model's card
 * (the ranker's {@code GET /info}). Invalid parameters raise {@link ParsingException} /
 * {@link IllegalArgumentException}, which OpenSearch answers with 400.
 */
public class DistilrankRescorerBuilder extends RescorerBuilder<DistilrankRescorerBuilder> {
    public static final String NAME = "distilrank";

    private final Clause clause;

    public DistilrankRescorerBuilder(Clause clause) {
        this.clause = Objects.requireNonNull(clause);
    }

    public DistilrankRescorerBuilder(StreamInput in) throws IOException {
        super(in);
        clause = Clause.readFrom(in);
    }

    @Override
    protected void doWriteTo(StreamOutput out) throws IOException {
        clause.writeTo(out);
    }

    @Override
    public String getWriteableName() {
        return NAME;
    }

    @Override
    protected void doXContent(XContentBuilder builder, Params params) throws IOException {
        builder.startObject(NAME);
        clause.toXContent(builder);
        builder.endObject();
    }

    public static DistilrankRescorerBuilder fromXContent(XContentParser parser) throws IOException {
        Map<String, Object> values = new HashMap<>();
        String current = null;
        XContentParser.Token token;
        while ((token = parser.nextToken()) != XContentParser.Token.END_OBJECT) {
            if (token == XContentParser.Token.FIELD_NAME) {
                current = parser.currentName();
                if (!Clause.KEYS.contains(current)) {
                    throw new ParsingException(parser.getTokenLocation(), "[distilrank] unknown parameter [" + current
                        + "]; expected one of " + String.join(", ", Clause.KEYS));
                }
            } else if (token == XContentParser.Token.START_ARRAY && "fields".equals(current)) {
                values.put(current, stringList(parser));
            } else if (token.isValue()) {
                values.put(current, value(parser, current));
            } else {
                throw new ParsingException(parser.getTokenLocation(),
                    "[distilrank] unexpected " + token + " for [" + current + "]");
            }
        }
        Object mode = values.get("score_mode");
        return new DistilrankRescorerBuilder(new Clause((String) values.get("query_text"), fields(values.get("fields")),
            mode == null ? null : Clause.ScoreMode.fromString((String) mode), (Float) values.get("query_weight"),
            (Float) values.get("rescore_query_weight"), (Double) values.get("first_stage_weight"),
            (String) values.get("first_stage_norm"), (String) values.get("ranker_norm"),
            (String) values.get("score_convention")));
    }

    private static List<String> stringList(XContentParser parser) throws IOException {
        List<String> out = new ArrayList<>();
        while (parser.nextToken() != XContentParser.Token.END_ARRAY) {
            if (parser.currentToken() != XContentParser.Token.VALUE_STRING) {
                throw new ParsingException(parser.getTokenLocation(),
                    "[distilrank] [fields] must be a list of strings");
            }
            out.add(parser.text());
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private static List<String> fields(Object value) {
        if (value == null) return null;
        return value instanceof String s ? List.of(s) : (List<String>) value;
    }

    private static Object value(XContentParser parser, String name) throws IOException {
        switch (name) {
            case "query_weight", "rescore_query_weight" -> {
                return (float) number(parser, name);
            }
            case "first_stage_weight" -> {
                return number(parser, name);
            }
            default -> {
                if (parser.currentToken() != XContentParser.Token.VALUE_STRING) {
                    throw new ParsingException(parser.getTokenLocation(),
                        "[distilrank] [" + name + "] must be a string");
                }
                return parser.text();
            }
        }
    }

    private static double number(XContentParser parser, String name) throws IOException {
        if (parser.currentToken() != XContentParser.Token.VALUE_NUMBER) {
            throw new ParsingException(parser.getTokenLocation(), "[distilrank] [" + name + "] must be a number, got ["
                + parser.text() + "]");
        }
        return parser.doubleValue();
    }

    @Override
    public RescorerBuilder<DistilrankRescorerBuilder> rewrite(QueryRewriteContext ctx) {
        return this;
    }

    /**
     * A clause without {@code window_size} rescores the window the card's interpolation was tuned at
     * ({@code depth}); when no ranker answers {@code /info}, {@link Interpolation#CONSERVATIVE_DEPTH}.
     */
    @Override
    protected RescoreContext innerBuildContext(int windowSize, QueryShardContext context) {
        RankerClient client = DistilrankPlugin.client();
        int window = windowSize;
        if (windowSize() == null) {
            ModelDefaults d = client.defaultsOrNull();
            window = d != null ? d.interpolation().depth() : Interpolation.CONSERVATIVE_DEPTH;
        }
        return new DistilrankRescorer.Context(window, clause, client);
    }

    @Override
    public boolean equals(Object o) {
        if (!super.equals(o)) return false;
        return clause.equals(((DistilrankRescorerBuilder) o).clause);
    }

    @Override
    public int hashCode() {
        return Objects.hash(super.hashCode(), clause);
    }
}
