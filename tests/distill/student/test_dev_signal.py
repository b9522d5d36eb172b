"""The dev signal: split size, candidates, tie breaking, distance from chance, checkpoint choice, the guard."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from distill.core.cross_encoder import tie_key, top_candidates
from distill.core.errors import DataError
from distill.core.evaluation import evaluate
from distill.core.label_files import LabeledDoc, LabeledQuery
from distill.student.dev_signal import (
    choose_checkpoint,
    dev_evaluate,
    dev_first_stage,
    dev_signal_check,
    dev_split_size,
    random_ndcg,
    resolve_rule,
)
from distill.student.guard import dev_verdict
from distill.student.interpolate import InterpolationResult
from distill.student.train import StudentTrainConfig, build_dev_split


def _labels(n_queries: int, n_docs: int, seed: int = 0) -> list[LabeledQuery]:
    rng = random.Random(seed)
    return [LabeledQuery(f"q{i:03d}", f"query {i}", tuple(LabeledDoc(f"d{j:03d}", rng.gauss(0, 1), "run")
                                                          for j in range(n_docs))) for i in range(n_queries)]


def test_ties_at_the_cut_are_not_broken_by_doc_id_nor_input_order() -> None:
    docs = {f"d{j:03d}": 0.0 for j in range(100)}
    top = top_candidates("q1", docs, 20)
    assert top != sorted(docs)[:20] and len(set(top)) == 20
    assert top_candidates("q1", dict(reversed(list(docs.items()))), 20) == top  # input order does not matter
    assert top_candidates("q2", docs, 20) != top  # another query, another (fixed) order
    assert top == sorted(docs, key=lambda d: tie_key("q1", d))[:20]
    assert top_candidates("q1", {"b": 2.0, "a": 1.0, "c": 3.0}, 2) == ["c", "b"]  # scores still decide


def test_dev_split_size_adapts_to_the_label_set() -> None:
    size = lambda n: dev_split_size(n, 0.15, 5, 100)  # noqa: E731 - the defaults
    assert [size(n) for n in (2, 4, 10, 20, 33, 54, 200, 659, 2000)] == [1, 2, 5, 5, 5, 8, 30, 99, 100]
    assert size(54) <= 0.2 * 54 and 54 - size(54) == 46  # a 54-query label file keeps 46 to train on
    cfg = StudentTrainConfig()
    assert (cfg.dev_fraction, cfg.dev_min_queries, cfg.dev_max_queries) == (0.15, 5, 100)
    with pytest.raises(DataError, match="a dev split needs at least 2"):
        size(1)


def test_without_a_dev_run_every_labelled_candidate_is_reranked() -> None:
    labels = _labels(10, 100)
    first, top_k = dev_first_stage(labels, {"q001", "q002"}, None, 20)
    assert set(first) == {"q001", "q002"} and top_k == 100
    assert all(len(docs) == 100 and set(docs.values()) == {0.0} for docs in first.values())
    run = {"q001": {"x": 1.0}, "q009": {"y": 1.0}}
    assert dev_first_stage(labels, {"q001", "q002"}, run, 20) == ({"q001": {"x": 1.0}}, 20)
    split = build_dev_split(labels, {}, StudentTrainConfig())
    assert split.top_k == 100 and not split.from_run and split.signal == "teacher ranking (top 3)"


def _rerank_with(scores: dict[str, dict[str, float]]):  # noqa: ANN202
    """A stand-in for the student's scorer: the given scores for the candidates that make the top-k cut."""
    return lambda queries, run, top_k: {q: {d: scores[q][d] for d in top_candidates(q, run[q], top_k)}
                                        for q in run if q in queries}


def test_a_student_copying_the_teacher_scores_one_and_a_random_one_scores_chance() -> None:
    labels = _labels(1600, 100)
    split = build_dev_split(labels, {}, StudentTrainConfig(dev_fraction=0.5, dev_max_queries=1000))
    assert len(split.qids) == 800
    teacher = {lq.qid: {d.doc_id: d.score for d in lq.docs} for lq in labels}
    run, metrics, per_query = dev_evaluate(_rerank_with(teacher), split)
    assert metrics["ndcg@10"] == pytest.approx(1.0) and all(len(run[q]) == 100 for q in split.qids)
    assert dev_signal_check(split.qrels, run, per_query).z > 30

    rng = random.Random(7)
    noise = {q: {d: rng.random() for d in docs} for q, docs in teacher.items()}
    run, metrics, per_query = dev_evaluate(_rerank_with(noise), split)
    # 3 relevant of 100: 0.03 * sum_{i<=10} 1/log2(i+1) / sum_{i<=3} 1/log2(i+1)
    analytic = 0.03 * sum(1 / math.log2(i + 1) for i in range(1, 11)) / sum(1 / math.log2(i + 1) for i in (1, 2, 3))
    assert analytic == pytest.approx(0.0640, abs=1e-4)
    # per-query nDCG of a random order is mostly 0 and heavy-tailed: its spread is taken around the analytic mean
    values = list(per_query.values())
    se = (sum((v - analytic) ** 2 for v in values) / len(values) / len(values)) ** 0.5
    assert abs(metrics["ndcg@10"] - analytic) < 3 * se
    check = dev_signal_check(split.qrels, run, per_query)
    assert check.random_ndcg10 == pytest.approx(analytic) and abs(check.z) < 3


def test_random_ndcg_matches_every_permutation_averaged() -> None:
    """Graded gains, a judged document outside the candidates (in the ideal DCG only), k below n."""
    qrels_one = {"a": 2, "b": 1, "z": 1}
    cands = ["a", "b", "c", "d", "e"]
    perms = list(itertools.permutations(cands))
    run = {f"p{i}": {d: float(len(p) - r) for r, d in enumerate(p)} for i, p in enumerate(perms)}
    res = evaluate({q: qrels_one for q in run}, run, ["ndcg@3"])
    assert random_ndcg([2, 1, 0, 0, 0], 5, [2, 1, 1], k=3) == pytest.approx(res.metrics["ndcg@3"])
    assert random_ndcg([], 5, [], k=3) == 0.0


def test_checkpoint_rules() -> None:
    """``last_unless_beaten`` keeps the final model unless an earlier one is better by more than the margin in
    standard errors of the paired per-query differences; ``best`` is the arg-max of the mean."""
    final = {f"q{i}": 0.3 + 0.05 * i for i in range(10)}
    jitter = {f"q{i}": final[f"q{i}"] + (0.06 if i % 2 else -0.04) for i in range(10)}  # +0.01 on average
    history = {50: jitter, 100: final}
    assert choose_checkpoint(history, "best") == (50, "highest mean dev nDCG@10 (0.5350 at step 50)")
    step, why = choose_checkpoint(history, "last_unless_beaten", 2.0)
    assert step == 100 and "within 2 standard errors (0.0167)" in why  # the 0.01 is noise: the final model stays
    clear = {50: {f"q{i}": 0.9 for i in range(10)}, 100: {f"q{i}": 0.2 + 0.01 * i for i in range(10)}}
    step, why = choose_checkpoint(clear, "last_unless_beaten", 2.0)
    assert step == 50 and "beats the final step 100" in why
    assert choose_checkpoint({50: {"q": 0.9}, 100: {"q": 0.1}}, "last_unless_beaten")[0] == 100  # one query: no SE
    assert choose_checkpoint({50: {"q": 0.5}, 100: {"q": 0.5}}, "best")[0] == 50  # equal means: the earliest
    assert resolve_rule("auto", "qrels") == "best"
    assert resolve_rule("auto", "teacher ranking (top 3)") == "last_unless_beaten"
    assert resolve_rule("best", "teacher ranking (top 3)") == "best"
    assert StudentTrainConfig().checkpoint_rule == "auto" and StudentTrainConfig().checkpoint_margin_se == 2.0


def _interp(fs: float, st: float, it: float) -> InterpolationResult:
    return InterpolationResult(0.3, "minmax", "none", "ndcg@10", it, st, fs, 12)


def test_guard_is_a_regression_only_when_neither_student_beats_the_first_stage() -> None:
    assert not dev_verdict(_interp(0.5, 0.6, 0.55), "real qrels").regression
    assert not dev_verdict(_interp(0.5, 0.4, 0.52), "real qrels").regression
    bad = dev_verdict(_interp(0.5, 0.4, 0.5), "real qrels")
    assert bad.regression and bad.message.startswith("REGRESSION") and "first stage 0.5000" in bad.message
