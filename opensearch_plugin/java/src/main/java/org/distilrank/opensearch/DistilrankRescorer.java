package org.distilrank.opensearch;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.lucene.search.Explanation;
import org.apache.lucene.search.IndexSearcher;
import org.apache.lucene.search.ScoreDoc;
import org.apache.lucene.search.TopDocs;
import org.opensearch.common.xcontent.XContentHelper;
import org.opensearch.common.xcontent.support.XContentMapValues;
import org.opensearch.core.common.bytes.BytesReference;
import org.opensearch.index.fieldvisitor.FieldsVisitor;
import org.opensearch.search.rescore.RescoreContext;
import org.opensearch.search.rescore.Rescorer;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Rescores the top {@code window_size} hits of a shard with the ranker, combining scores exactly like OpenSearch's
 * {@code QueryRescorer}: every window hit gets {@code mode(first * query_weight, ranker * rescore_query_weight)},
 * hits beyond the window get {@code first * query_weight}, then all are sorted by score (ties by doc id).
 * Any ranker failure leaves the shard's first-stage hits untouched (fail open).
 */
public final class DistilrankRescorer implements Rescorer {
    private static final Logger logger = LogManager.getLogger(DistilrankRescorer.class);
    static final DistilrankRescorer INSTANCE = new DistilrankRescorer();

    /** Score descending, then doc id ascending: the order Lucene's and OpenSearch's rescorers use. */
    private static final Comparator<ScoreDoc> SCORE_DOC_COMPARATOR = (a, b) -> {
        int c = Float.compare(b.score, a.score);
        return c != 0 ? c : Integer.compare(a.doc, b.doc);
    };

    static final class Context extends RescoreContext {
        final String queryText;
        final List<String> fields;
        final float queryWeight;
        final float rescoreQueryWeight;
        final DistilrankRescorerBuilder.ScoreMode scoreMode;
        final RankerClient client;
        /** Ranker scores by top-level doc id from this context's rescore, reused by explain. */
        final Map<Integer, Float> rankerScores = new HashMap<>();

        Context(int windowSize, String queryText, List<String> fields, float queryWeight, float rescoreQueryWeight,
                DistilrankRescorerBuilder.ScoreMode scoreMode, RankerClient client) {
            super(windowSize, INSTANCE);
            this.queryText = queryText;
            this.fields = fields;
            this.queryWeight = queryWeight;
            this.rescoreQueryWeight = rescoreQueryWeight;
            this.scoreMode = scoreMode;
            this.client = client;
        }
    }

    private DistilrankRescorer() {}

    @Override
    public TopDocs rescore(TopDocs topDocs, IndexSearcher searcher, RescoreContext rescoreContext) throws IOException {
        Context ctx = (Context) rescoreContext;
        if (topDocs == null || topDocs.scoreDocs.length == 0 || ctx.getWindowSize() <= 0) {
            return topDocs;
        }
        ScoreDoc[] window = topDocs.scoreDocs.clone();
        Arrays.sort(window, SCORE_DOC_COMPARATOR);
        window = Arrays.copyOf(window, Math.min(ctx.getWindowSize(), window.length));

        final float[] ranker;
        try {
            List<String> texts = new ArrayList<>(window.length);
            for (ScoreDoc sd : window) {
                texts.add(documentText(searcher, sd.doc, ctx.fields));
            }
            ranker = ctx.client.score(ctx.queryText, texts);
        } catch (RankerClient.RankerException e) {
            logger.warn("distilrank rescore failed open ({}): {}", e.kind, e.getMessage());
            return topDocs;
        } catch (RuntimeException e) {
            ctx.client.stats().recordFailure("source");
            logger.warn("distilrank rescore failed open (could not read document text)", e);
            return topDocs;
        }

        Set<Integer> rescored = new HashSet<>();
        ScoreDoc[] resorted = new ScoreDoc[window.length];
        for (int i = 0; i < window.length; i++) {
            ScoreDoc sd = window[i];
            float combined = ctx.scoreMode.combine(sd.score * ctx.queryWeight, ranker[i] * ctx.rescoreQueryWeight);
            resorted[i] = new ScoreDoc(sd.doc, combined, sd.shardIndex);
            rescored.add(sd.doc);
            ctx.rankerScores.put(sd.doc, ranker[i]);
        }
        Arrays.sort(resorted, SCORE_DOC_COMPARATOR);
        ctx.setRescoredDocs(rescored);

        // Splice like QueryRescorer#combine: window first, the rest scaled by query_weight, then one global sort.
        ScoreDoc[] all = new ScoreDoc[topDocs.scoreDocs.length];
        System.arraycopy(resorted, 0, all, 0, resorted.length);
        int j = resorted.length;
        for (ScoreDoc sd : topDocs.scoreDocs) {
            if (!rescored.contains(sd.doc)) {
                all[j++] = new ScoreDoc(sd.doc, sd.score * ctx.queryWeight, sd.shardIndex);
            }
        }
        if (all.length > resorted.length) {
            Arrays.sort(all, SCORE_DOC_COMPARATOR);
        }
        return new TopDocs(topDocs.totalHits, all);
    }

    /**
     * Joins the non-empty values of {@code fields} from _source with ". " (lists element by element), so
     * {@code ["title", "text"]} gives the same string as distill.core.formats.Document.full_text.
     */
    static String documentText(IndexSearcher searcher, int docId, List<String> fields) throws IOException {
        FieldsVisitor visitor = new FieldsVisitor(true);
        searcher.getIndexReader().storedFields().document(docId, visitor);
        BytesReference source = visitor.source();
        if (source == null) {
            throw new IllegalStateException("document " + docId + " has no _source; the distilrank rescorer reads text from _source");
        }
        Map<String, Object> map = XContentHelper.convertToMap(source, false).v2();
        StringBuilder text = new StringBuilder();
        for (String field : fields) {
            appendValue(text, XContentMapValues.extractValue(field, map));
        }
        return text.toString();
    }

    private static void appendValue(StringBuilder text, Object value) {
        if (value == null) return;
        if (value instanceof List<?> list) {
            for (Object v : list) appendValue(text, v);
            return;
        }
        String s = value.toString();
        if (s.isEmpty()) return;
        if (text.length() > 0) text.append(". ");
        text.append(s);
    }

    @Override
    public Explanation explain(int topLevelDocId, IndexSearcher searcher, RescoreContext rescoreContext,
                               Explanation sourceExplanation) throws IOException {
        Context ctx = (Context) rescoreContext;
        if (!sourceExplanation.isMatch()) {
            return sourceExplanation;
        }
        float first = sourceExplanation.getValue().floatValue();
        Explanation prim = Explanation.match(first * ctx.queryWeight, "product of:", sourceExplanation,
            Explanation.match(ctx.queryWeight, "primaryWeight"));
        if (ctx.getRescoredDocs() != null && !ctx.isRescored(topLevelDocId)) {
            return prim; // outside the rescore window
        }
        Float rankerScore = ctx.rankerScores.get(topLevelDocId);
        if (rankerScore == null) {
            try {
                rankerScore = ctx.client.score(ctx.queryText, List.of(documentText(searcher, topLevelDocId, ctx.fields)))[0];
            } catch (RankerClient.RankerException | RuntimeException e) {
                return Explanation.match(first, "distilrank ranker unavailable, first-stage score kept (fail open): "
                    + e.getMessage(), sourceExplanation);
            }
        }
        Explanation sec = Explanation.match(rankerScore * ctx.rescoreQueryWeight, "product of:",
            Explanation.match(rankerScore, "distilrank ranker relevance_score for query_text [" + ctx.queryText + "]"),
            Explanation.match(ctx.rescoreQueryWeight, "secondaryWeight"));
        float combined = ctx.scoreMode.combine(first * ctx.queryWeight, rankerScore * ctx.rescoreQueryWeight);
        return Explanation.match(combined, "distilrank score mode [" + ctx.scoreMode + "] combined:", prim, sec);
    }
}
