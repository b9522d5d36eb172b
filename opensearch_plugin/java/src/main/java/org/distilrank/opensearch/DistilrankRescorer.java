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
 * Rescores the top {@code window_size} hits of a shard with the ranker.
 *
 * <p>{@code interpolate} (the default): over the shard's window, {@code w * norm_fs(first) + (1 - w) * norm_r(ranker)}
 * exactly as {@code distill.core.interpolation.blend} computes it (doubles); the window is ordered by that blend, exact
 * ties by {@code _id} ascending, and each hit's score is the blend rounded to float. Hits below the window keep
 * their first-stage order and gaps under every rescored hit: {@code floor - 1 - (last window hit's first-stage score
 * - this hit's)}, where {@code floor} bounds every blend from below ({@link Blend#floor}).
 *
 * <p>{@code total|multiply|avg|max|min}: OpenSearch's {@code QueryRescorer} arithmetic: window hits get
 * {@code mode(first * query_weight, ranker * rescore_query_weight)}, the others {@code first * query_weight}.
 *
 * <p>Any ranker failure leaves the shard's first-stage hits untouched (fail open).
 */
public final class DistilrankRescorer implements Rescorer {
    private static final Logger logger = LogManager.getLogger(DistilrankRescorer.class);
    static final DistilrankRescorer INSTANCE = new DistilrankRescorer();

    /** Score descending, then doc id ascending: the order Lucene's and OpenSearch's rescorers use. */
    private static final Comparator<ScoreDoc> SCORE_DOC_COMPARATOR = (a, b) -> {
        int c = Float.compare(b.score, a.score);
        return c != 0 ? c : Integer.compare(a.doc, b.doc);
    };

    /** The parts of one hit's final score, kept for explain: raw inputs, normalised inputs, the result. */
    record Parts(double first, double ranker, double firstNorm, double rankerNorm, double score, boolean inWindow) {}

    static final class Context extends RescoreContext {
        final Clause clause;
        final RankerClient client;
        /** Interpolation applied by this context's rescore, null before it ran or in a QueryRescorer mode. */
        Interpolation applied;
        double floor;
        /** By top-level doc id, from this context's rescore. */
        final Map<Integer, Parts> parts = new HashMap<>();

        Context(int windowSize, Clause clause, RankerClient client) {
            super(windowSize, INSTANCE);
            this.clause = clause;
            this.client = client;
        }
    }

    /** The window's hits: their text for the ranker, their {@code _id} for tie-breaking. */
    private record Window(ScoreDoc[] docs, List<String> texts, String[] ids) {}

    private DistilrankRescorer() {}

    @Override
    public TopDocs rescore(TopDocs topDocs, IndexSearcher searcher, RescoreContext rescoreContext) throws IOException {
        Context ctx = (Context) rescoreContext;
        if (topDocs == null || topDocs.scoreDocs.length == 0 || ctx.getWindowSize() <= 0) {
            return topDocs;
        }
        ScoreDoc[] sorted = topDocs.scoreDocs.clone();
        Arrays.sort(sorted, SCORE_DOC_COMPARATOR);
        ScoreDoc[] window = Arrays.copyOf(sorted, Math.min(ctx.getWindowSize(), sorted.length));
        try {
            TopDocs out = ctx.clause.scoreMode() == Clause.ScoreMode.INTERPOLATE
                ? interpolate(topDocs, sorted, read(searcher, window, ctx.clause.fields()), ctx)
                : combine(topDocs, read(searcher, window, ctx.clause.fields()), ctx);
            ctx.client.stats().recordSuccess();
            return out;
        } catch (RankerClient.RankerException e) {
            ctx.client.stats().recordFailure(e.kind);
            logger.warn("distilrank rescore failed open ({}): {}", e.kind, e.getMessage());
            return topDocs;
        } catch (RuntimeException e) {
            ctx.client.stats().recordFailure("source");
            logger.warn("distilrank rescore failed open (could not read document text)", e);
            return topDocs;
        }
    }

    private static Window read(IndexSearcher searcher, ScoreDoc[] window, List<String> fields) throws IOException {
        List<String> texts = new ArrayList<>(window.length);
        String[] ids = new String[window.length];
        for (int i = 0; i < window.length; i++) {
            FieldsVisitor visitor = new FieldsVisitor(true);
            searcher.getIndexReader().storedFields().document(window[i].doc, visitor);
            texts.add(documentText(visitor.source(), window[i].doc, fields));
            ids[i] = visitor.id() == null ? "" : visitor.id();
        }
        return new Window(window, texts, ids);
    }

    private static TopDocs interpolate(TopDocs topDocs, ScoreDoc[] sorted, Window w, Context ctx)
        throws RankerClient.RankerException {
        ModelDefaults defaults = ctx.clause.needsCard() ? ctx.client.defaults() : null;
        Interpolation spec = ctx.clause.interpolation(defaults, ctx.getWindowSize());
        RankerClient.Answer answer = ctx.client.score(ctx.clause.queryText(), w.texts());
        double[] ranker = Blend.toConvention(answer.scores(), answer.served(), spec.scoreConvention());
        int n = w.docs().length;
        double[] first = new double[n];
        for (int i = 0; i < n; i++) first[i] = w.docs()[i].score;
        double[] blended = Blend.blend(first, ranker, spec);
        double[] fsNorm = Blend.normalize(first, spec.firstStageNorm());
        double[] rNorm = Blend.normalize(ranker, spec.rankerNorm());
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) order[i] = i;
        Arrays.sort(order, (a, b) -> {
            int c = Double.compare(blended[b], blended[a]);
            return c != 0 ? c : Blend.compareIds(w.ids()[a], w.ids()[b]);
        });
        ctx.applied = spec;
        ctx.floor = Blend.floor(spec, first, ranker, ctx.getWindowSize()) - 1.0;
        ScoreDoc[] all = new ScoreDoc[sorted.length];
        Set<Integer> rescored = new HashSet<>();
        for (int k = 0; k < n; k++) {
            int i = order[k];
            ScoreDoc sd = w.docs()[i];
            all[k] = new ScoreDoc(sd.doc, (float) blended[i], sd.shardIndex);
            rescored.add(sd.doc);
            ctx.parts.put(sd.doc, new Parts(first[i], answer.scores()[i], fsNorm[i], rNorm[i], blended[i], true));
        }
        double lastFirst = first[n - 1];
        for (int k = n; k < sorted.length; k++) {
            ScoreDoc sd = sorted[k];
            double below = ctx.floor - (lastFirst - (double) sd.score);
            all[k] = new ScoreDoc(sd.doc, (float) below, sd.shardIndex);
            ctx.parts.put(sd.doc, new Parts(sd.score, Double.NaN, Double.NaN, Double.NaN, below, false));
        }
        ctx.setRescoredDocs(rescored);
        return new TopDocs(topDocs.totalHits, all);
    }

    private static TopDocs combine(TopDocs topDocs, Window w, Context ctx) throws RankerClient.RankerException {
        double[] ranker = ctx.client.score(ctx.clause.queryText(), w.texts()).scores();
        float qw = ctx.clause.queryWeightOrDefault();
        float rqw = ctx.clause.rescoreQueryWeightOrDefault();
        ScoreDoc[] window = w.docs();
        Set<Integer> rescored = new HashSet<>();
        ScoreDoc[] resorted = new ScoreDoc[window.length];
        for (int i = 0; i < window.length; i++) {
            ScoreDoc sd = window[i];
            float r = (float) ranker[i];
            resorted[i] = new ScoreDoc(sd.doc, ctx.clause.scoreMode().combine(sd.score * qw, r * rqw), sd.shardIndex);
            rescored.add(sd.doc);
            ctx.parts.put(sd.doc, new Parts(sd.score, r, Double.NaN, Double.NaN, resorted[i].score, true));
        }
        Arrays.sort(resorted, SCORE_DOC_COMPARATOR);
        ctx.setRescoredDocs(rescored);
        // Splice like QueryRescorer#combine: window first, the rest scaled by query_weight, then one global sort.
        ScoreDoc[] all = new ScoreDoc[topDocs.scoreDocs.length];
        System.arraycopy(resorted, 0, all, 0, resorted.length);
        int j = resorted.length;
        for (ScoreDoc sd : topDocs.scoreDocs) {
            if (!rescored.contains(sd.doc)) {
                all[j++] = new ScoreDoc(sd.doc, sd.score * qw, sd.shardIndex);
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
    static String documentText(BytesReference source, int docId, List<String> fields) {
        if (source == null) {
            throw new IllegalStateException("document " + docId
                + " has no _source; the distilrank rescorer reads text from _source");
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
        Parts p = ctx.parts.get(topLevelDocId);
        if (ctx.clause.scoreMode() == Clause.ScoreMode.INTERPOLATE) {
            return explainInterpolate(ctx, p, sourceExplanation);
        }
        if (p == null && ctx.getRescoredDocs() == null) { // the fetch phase runs apart from the rescore: ask again
            try {
                Window w = read(searcher, new ScoreDoc[] {new ScoreDoc(topLevelDocId, 0f)}, ctx.clause.fields());
                float r = (float) ctx.client.score(ctx.clause.queryText(), w.texts()).scores()[0];
                p = new Parts(sourceExplanation.getValue().doubleValue(), r, Double.NaN, Double.NaN, Double.NaN, true);
            } catch (RankerClient.RankerException | RuntimeException e) {
                return Explanation.match(sourceExplanation.getValue(), "distilrank ranker unavailable, first-stage "
                    + "score kept (fail open): " + e.getMessage(), sourceExplanation);
            }
        }
        return explainCombine(ctx, p, sourceExplanation);
    }

    private static Explanation explainInterpolate(Context ctx, Parts p, Explanation source) {
        if (p == null || ctx.applied == null) {
            return Explanation.match(source.getValue(), "distilrank interpolate: no blend recorded for this hit in "
                + "this search context (the ranker failed open, or the fetch phase ran apart from the rescore, as "
                + "it does with several shards)", source);
        }
        Interpolation spec = ctx.applied;
        if (!p.inWindow()) {
            return Explanation.match((float) p.score(), "outside the distilrank window of " + spec.depth()
                + ": below every rescored hit, first-stage order kept: " + ctx.floor
                + " - (last window hit's first-stage score - this hit's)", source);
        }
        Explanation fs = Explanation.match(p.firstNorm(),
            spec.firstStageNorm() + " of the first-stage score over the window", source);
        Explanation rk = Explanation.match(p.rankerNorm(), spec.rankerNorm() + " of the ranker score over the window",
            Explanation.match(p.ranker(), "distilrank ranker relevance_score for query_text [" + ctx.clause.queryText()
                + "] (as served; blended as " + spec.scoreConvention() + ")"));
        return Explanation.match((float) p.score(), "distilrank score mode [interpolate]: first_stage_weight * first "
            + "+ (1 - first_stage_weight) * ranker, " + spec, fs, rk);
    }

    private static Explanation explainCombine(Context ctx, Parts p, Explanation source) {
        float qw = ctx.clause.queryWeightOrDefault();
        float rqw = ctx.clause.rescoreQueryWeightOrDefault();
        float first = source.getValue().floatValue();
        Explanation prim = Explanation.match(first * qw, "product of:", source, Explanation.match(qw, "primaryWeight"));
        if (p == null || !p.inWindow()) {
            return prim; // outside the rescore window, or the ranker failed open
        }
        float ranker = (float) p.ranker();
        Explanation sec = Explanation.match(ranker * rqw, "product of:",
            Explanation.match(ranker, "distilrank ranker relevance_score for query_text [" + ctx.clause.queryText()
                + "]"),
            Explanation.match(rqw, "secondaryWeight"));
        float combined = ctx.clause.scoreMode().combine(first * qw, ranker * rqw);
        return Explanation.match(combined, "distilrank score mode [" + ctx.clause.scoreMode() + "] combined:", prim,
            sec);
    }
}
