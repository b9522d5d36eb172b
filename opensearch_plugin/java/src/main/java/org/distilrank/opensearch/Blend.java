package org.distilrank.opensearch;

import java.math.BigDecimal;

/**
 * The arithmetic of {@code distill.core.normalization} and {@code distill.core.interpolation.blend}, in doubles and
 * in the same order of operations, so that a window blended here and in Python gives the same bits.
 *
 * <p>Python sums with {@code math.fsum} (the correctly rounded sum); here the sum is exact in {@link BigDecimal}
 * and rounded once by {@link BigDecimal#doubleValue()}, which is correctly rounded since JDK 19.
 */
final class Blend {
    /** std floor of distill.core.normalization.zscore: a constant window normalises to all zeros. */
    static final double MIN_STD = 1e-6;

    private Blend() {}

    static double fsum(double[] values) {
        BigDecimal sum = BigDecimal.ZERO;
        for (double v : values) {
            sum = sum.add(new BigDecimal(v));
        }
        return sum.doubleValue();
    }

    /** {@code (v - mean) / max(std, 1e-6)} with the population std. */
    static double[] zscore(double[] values) {
        int n = values.length;
        if (n == 0) return new double[0];
        double mean = fsum(values) / n;
        double[] sq = new double[n];
        for (int i = 0; i < n; i++) {
            double d = values[i] - mean;
            sq[i] = d * d;
        }
        double std = Math.max(Math.sqrt(fsum(sq) / n), MIN_STD);
        double[] out = new double[n];
        for (int i = 0; i < n; i++) {
            out[i] = (values[i] - mean) / std;
        }
        return out;
    }

    /** To [0, 1]; all zeros when every value is the same. */
    static double[] minmax(double[] values) {
        double lo = Double.POSITIVE_INFINITY;
        double hi = Double.NEGATIVE_INFINITY;
        for (double v : values) {
            lo = Math.min(lo, v);
            hi = Math.max(hi, v);
        }
        double[] out = new double[values.length];
        for (int i = 0; i < values.length; i++) {
            out[i] = hi == lo ? 0.0 : (values[i] - lo) / (hi - lo);
        }
        return out;
    }

    static double[] normalize(double[] values, String how) {
        return switch (how) {
            case "minmax" -> minmax(values);
            case "zscore" -> zscore(values);
            default -> values.clone();
        };
    }

    /** {@code w * norm_fs(first) + (1 - w) * norm_r(ranker)}, in window order. */
    static double[] blend(double[] first, double[] ranker, Interpolation spec) {
        double w = spec.firstStageWeight();
        double[] fs = normalize(first, spec.firstStageNorm());
        double[] rk = normalize(ranker, spec.rankerNorm());
        double[] out = new double[first.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = w * fs[i] + (1.0 - w) * rk[i];
        }
        return out;
    }

    /**
     * A lower bound of every blended score of a window of at most {@code windowSize} hits: minmax values are >= 0,
     * z-scores of n values are >= -sqrt(n - 1), and an unnormalised side is bounded by this window's minimum (so with
     * {@code none} the bound holds for this shard only).
     */
    static double floor(Interpolation spec, double[] first, double[] ranker, int windowSize) {
        double w = spec.firstStageWeight();
        return w * lowerBound(spec.firstStageNorm(), first, windowSize)
            + (1.0 - w) * lowerBound(spec.rankerNorm(), ranker, windowSize);
    }

    private static double lowerBound(String norm, double[] raw, int windowSize) {
        return switch (norm) {
            case "minmax" -> 0.0;
            case "zscore" -> -Math.sqrt(Math.max(windowSize - 1, 0));
            default -> {
                double lo = Double.POSITIVE_INFINITY;
                for (double v : raw) lo = Math.min(lo, v);
                yield lo;
            }
        };
    }

    /** Ranker scores as served ({@code raw_logit} or {@code sigmoid}) in the convention the blend expects. */
    static double[] toConvention(double[] scores, String served, String expected) {
        if (served == null || served.equals(expected)) return scores;
        double[] out = new double[scores.length];
        for (int i = 0; i < scores.length; i++) {
            out[i] = expected.equals("sigmoid") ? sigmoid(scores[i]) : logit(scores[i]);
        }
        return out;
    }

    static double sigmoid(double x) {
        if (x >= 0) return 1.0 / (1.0 + Math.exp(-x));
        double e = Math.exp(x);
        return e / (1.0 + e);
    }

    /** Inverse of the sigmoid; a probability of exactly 0 or 1 is clamped (logit about -708 or 36.7). */
    static double logit(double p) {
        double q = Math.min(Math.max(p, Double.MIN_NORMAL), 1.0 - 0x1p-53);
        return Math.log(q) - Math.log1p(-q);
    }

    /** Doc ids compared by code point, as Python compares str (String.compareTo compares UTF-16 units). */
    static int compareIds(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) return Integer.compare(ca, cb);
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }
}
