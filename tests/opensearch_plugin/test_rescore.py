"""Client-side rescoring semantics (no node needed): the interpolation blend per shard, hits below the window,
the QueryRescorer arithmetic, the card's defaults and their fallback, document text, fail open."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest

from distill.core.errors import ConfigError
from distill.core.formats import Document
from distill.core.interpolation import Interpolation, blend, rank_blended
from opensearch_plugin import (
    ModelDefaults,
    RescoreParams,
    ServedScores,
    blend_floor,
    combine,
    document_text,
    model_defaults,
    rescore_clause,
    rescore_hits,
    to_convention,
)

FIRST = np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)
RANKER = np.array([0.5, 2.0, 5.0], dtype=np.float32)
CARD = Interpolation(0.3, "minmax", "zscore", "dev_qrels", depth=3, score_convention="raw_logit")
DEFAULTS = ModelDefaults(CARD, "raw_logit", "abc", "http://ranker")


def hits_of(scores, shard: int | None = None, prefix: str = "d") -> list[dict[str, object]]:
    out = [{"_id": f"{prefix}{i}", "_score": float(s), "_source": {"text": f"doc {prefix}{i}"}}
           for i, s in enumerate(scores)]
    if shard is not None:
        for h in out:
            h["_shard"] = f"[idx][{shard}]"
    return out


def f32(x: float) -> float:
    return float(np.float32(x))


@pytest.mark.parametrize(("mode", "expected"), [
    ("total", [2.0 + 1.5, 1.5 + 6.0, 1.0 + 15.0, 0.5]),
    ("multiply", [2.0 * 1.5, 1.5 * 6.0, 1.0 * 15.0, 0.5]),
    ("avg", [(2.0 + 1.5) / 2, (1.5 + 6.0) / 2, (1.0 + 15.0) / 2, 0.5]),
    ("max", [2.0, 6.0, 15.0, 0.5]),
    ("min", [1.5, 1.5, 1.0, 0.5]),
])
def test_combine_matches_query_rescorer(mode: str, expected: list[float]) -> None:
    params = RescoreParams(window_size=3, query_weight=0.5, rescore_query_weight=3.0,
                           score_mode=mode)  # type: ignore[arg-type]
    assert combine(FIRST, RANKER, params).tolist() == pytest.approx(expected)


def test_document_text_matches_full_text() -> None:
    doc = Document("d1", "A title", "Body text.")
    assert document_text({"title": doc.title, "text": doc.text}, ["title", "text"]) == doc.full_text
    assert document_text({"title": "", "text": "only"}, ["title", "text"]) == "only"
    assert document_text({"meta": {"tags": ["a", "b"]}}, ["meta.tags", "missing"]) == "a. b"


def test_total_mode_orders_window_and_scales_the_rest() -> None:
    params = RescoreParams(window_size=3, query_weight=0.5, rescore_query_weight=3.0, score_mode="total")
    ranked = rescore_hits(hits_of(FIRST), "q", params, lambda q, docs: RANKER.tolist())
    assert [d for d, _ in ranked] == ["d2", "d1", "d0", "d3"]
    assert ranked[-1][1] == pytest.approx(0.5)


def test_interpolate_is_the_pipeline_blend_with_ties_by_doc_id() -> None:
    """Scores are distill.core.interpolation.blend (rounded to float32), the order rank_blended's."""
    first = [7.5, 7.25, 6.0, 5.5, 5.5]
    ranker = [1.0, 3.0, 3.0, -2.0, 0.25]
    ids = ["e", "d", "c", "b", "a"]
    hits = [{"_id": i, "_score": s, "_source": {"text": i}} for i, s in zip(ids, first, strict=True)]
    spec = dataclasses.replace(CARD, depth=5)
    defaults = dataclasses.replace(DEFAULTS, interpolation=spec)
    ranked = rescore_hits(hits, "q", RescoreParams(), lambda q, docs: ranker, defaults)
    expected = blend(first, ranker, spec)
    assert [d for d, _ in ranked] == [ids[i] for i in rank_blended(ids, expected)]
    assert [s for _, s in ranked] == [f32(expected[i]) for i in rank_blended(ids, expected)]
    tied = rescore_hits(hits, "q", RescoreParams(window_size=5, first_stage_weight=0.0, first_stage_norm="none",
                                                 ranker_norm="none", score_convention="raw_logit"),
                        lambda q, docs: [1.0] * 5)
    assert [d for d, _ in tied] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(("fs_norm", "r_norm"), [("minmax", "minmax"), ("zscore", "zscore"), ("none", "none"),
                                                 ("minmax", "none")])
def test_hits_below_the_window_rank_below_every_rescored_hit_in_first_stage_order(fs_norm: str, r_norm: str) -> None:
    first = [30.0, 29.0, 28.5, 28.0, 27.0, 20.0, 19.5, 3.0]
    params = RescoreParams(window_size=4, first_stage_weight=0.5, first_stage_norm=fs_norm,  # type: ignore[arg-type]
                           ranker_norm=r_norm, score_convention="raw_logit")  # type: ignore[arg-type]
    ranked = rescore_hits(hits_of(first), "q", params, lambda q, docs: [-9.0, 40.0, 2.0, 0.5])
    below = [d for d, _ in ranked[4:]]
    assert below == ["d4", "d5", "d6", "d7"]
    assert min(s for _, s in ranked[:4]) > max(s for _, s in ranked[4:])
    spec = params.interpolation(None)
    floor = blend_floor(spec, first[:4], to_convention([-9.0, 40.0, 2.0, 0.5], "raw_logit", "raw_logit"), 4) - 1.0
    assert [s for _, s in ranked[4:]] == [f32(floor - (first[3] - f)) for f in first[4:]]


def test_each_shard_is_rescored_and_normalised_on_its_own_then_merged_by_score() -> None:
    shard0 = hits_of([10.0, 9.0, 8.0, 1.0], shard=0, prefix="a")
    shard1 = hits_of([3.0, 2.5, 2.0], shard=1, prefix="b")
    interleaved = [shard0[0], shard1[0], shard0[1], shard1[1], shard0[2], shard1[2], shard0[3]]
    scores = {"doc a0": 0.1, "doc a1": 0.9, "doc a2": 0.5, "doc b0": 2.0, "doc b1": 1.0, "doc b2": 1.5}
    params = RescoreParams(window_size=3)
    ranked = rescore_hits(interleaved, "q", params, lambda q, docs: [scores[d] for d in docs], DEFAULTS)
    per_shard = {}
    for group in (shard0, shard1):
        first = [float(h["_score"]) for h in group]
        window = [scores[f"doc {h['_id']}"] for h in group[:3]]
        per_shard.update(dict(rescore_hits(group, "q", params, lambda q, d, w=window: w, DEFAULTS)))
        expected = blend(first[:3], window, dataclasses.replace(CARD, depth=3))
        assert [per_shard[h["_id"]] for h in group[:3]] == [f32(x) for x in expected]
    assert dict(ranked) == per_shard
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)


def test_shard_ties_merge_by_shard_number_like_opensearch() -> None:
    hits = hits_of([5.0, 4.0], shard=1, prefix="b") + hits_of([5.0, 4.0], shard=0, prefix="a")
    params = RescoreParams(window_size=2, first_stage_weight=1.0, first_stage_norm="minmax", ranker_norm="none",
                           score_convention="raw_logit")
    ranked = rescore_hits(hits, "q", params, lambda q, docs: [0.0, 0.0])
    assert [d for d, _ in ranked] == ["a0", "b0", "a1", "b1"]


def test_clause_values_override_the_cards_and_window_defaults_to_its_depth() -> None:
    params = RescoreParams(first_stage_weight=0.9)
    spec = params.interpolation(DEFAULTS)
    assert (spec.first_stage_weight, spec.first_stage_norm, spec.ranker_norm) == (0.9, "minmax", "zscore")
    assert spec.depth == 3
    assert params.window(DEFAULTS) == 3 and params.window(None) == 20
    resolved = RescoreParams().resolved(DEFAULTS)
    assert rescore_clause("q", resolved) == {"window_size": 3, "distilrank": {
        "query_text": "q", "fields": ["title", "text"], "score_mode": "interpolate", "first_stage_weight": 0.3,
        "first_stage_norm": "minmax", "ranker_norm": "zscore", "score_convention": "raw_logit"}}


def test_a_blend_left_to_a_card_that_nothing_provides_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="leaves first_stage_weight, .* to the model card"):
        rescore_hits(hits_of(FIRST), "q", RescoreParams(window_size=2), lambda q, docs: [1.0, 2.0])


def test_card_without_interpolation_falls_back_to_the_documented_defaults(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        d = model_defaults({"score": "sigmoid", "card_sha256": "x", "interpolation": None}, "http://old")
    assert d.fallback and (d.interpolation.first_stage_weight, d.interpolation.first_stage_norm,
                           d.interpolation.ranker_norm, d.interpolation.depth) == (0.6, "zscore", "zscore", 20)
    assert d.interpolation.score_convention == "sigmoid" == d.served
    assert "without an interpolation (an older export)" in caplog.text
    tuned = model_defaults({"score": "raw_logit", "card_sha256": "y", "interpolation": CARD.to_dict()}, "http://new")
    assert tuned.interpolation == CARD and not tuned.fallback


def test_served_scores_are_turned_into_the_convention_the_blend_expects() -> None:
    logits = [-3.0, 0.0, 2.5, 40.0]
    sig = to_convention(logits, "raw_logit", "sigmoid")
    assert sig == pytest.approx([1 / (1 + math.exp(3.0)), 0.5, 1 / (1 + math.exp(-2.5)), 1.0])
    assert to_convention(sig[:3], "sigmoid", "raw_logit") == pytest.approx(logits[:3])
    assert math.isfinite(to_convention([1.0], "sigmoid", "raw_logit")[0])
    hits = hits_of([3.0, 2.0, 1.0])
    params = RescoreParams(window_size=3, first_stage_weight=0.0, first_stage_norm="none", ranker_norm="none",
                           score_convention="sigmoid")
    ranked = rescore_hits(hits, "q", params, lambda q, docs: ServedScores([2.0, -1.0, 0.0], "raw_logit"))
    assert dict(ranked)["d1"] == f32(1 / (1 + math.exp(1.0)))


@pytest.mark.parametrize("bad", [RuntimeError("down"), [1.0]])
def test_rescore_hits_fails_open(bad: object) -> None:
    hits = hits_of(FIRST)

    def score_fn(q: str, docs: list[str]) -> list[float]:
        if isinstance(bad, Exception):
            raise bad
        return bad  # type: ignore[return-value]

    for params in (RescoreParams(window_size=3, score_mode="total"), RescoreParams(window_size=3)):
        ranked = rescore_hits(hits, "q", params, score_fn, DEFAULTS)
        assert ranked == [(h["_id"], h["_score"]) for h in hits]


def test_no_card_reachable_fails_open() -> None:
    def score_fn(q: str, docs: list[str]) -> list[float]:
        raise AssertionError("not called")

    score_fn.model_defaults = lambda: (_ for _ in ()).throw(RuntimeError("no /info"))  # type: ignore[attr-defined]
    hits = hits_of(FIRST)
    assert rescore_hits(hits, "q", RescoreParams(), score_fn) == [(h["_id"], h["_score"]) for h in hits]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window_size": 0}, "window_size must be >= 1"),
    ({"fields": ()}, "fields must name at least one"),
    ({"score_mode": "sum"}, "score_mode must be one of"),
    ({"first_stage_weight": 1.5}, r"first_stage_weight must be a number in \[0, 1\]"),
    ({"first_stage_weight": float("nan")}, r"first_stage_weight must be a number in \[0, 1\]"),
    ({"ranker_norm": "l2"}, "ranker_norm must be one of"),
    ({"score_convention": "logit"}, "score_convention must be raw_logit or sigmoid"),
    ({"query_weight": 0.5}, "apply to score_mode total"),
    ({"score_mode": "total", "first_stage_weight": 0.5}, "apply to score_mode interpolate, not total"),
])
def test_params_are_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RescoreParams(**kwargs)  # type: ignore[arg-type]


def test_rescore_clause_shape() -> None:
    assert rescore_clause("q", RescoreParams()) == {"distilrank": {"query_text": "q", "fields": ["title", "text"],
                                                                   "score_mode": "interpolate"}}
    clause = rescore_clause("q", RescoreParams(window_size=7, score_mode="max"))
    assert clause == {"window_size": 7, "distilrank": {"query_text": "q", "fields": ["title", "text"],
                                                       "score_mode": "max"}}
