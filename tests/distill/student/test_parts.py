from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distill.core.errors import ConfigError, DataError
from distill.core.label_files import LabeledDoc, LabeledQuery
from distill.student.interpolate import InterpolationConfig, interpolate_runs, normalize_run, tune_alpha
from distill.student.model import StudentModelConfig, build_student, select_layers
from distill.student.normalize import NormalizationConfig, normalize_scores
from distill.student.pairs import PairConfig, build_groups


def _lq(qid: str, scores: dict[str, float]) -> LabeledQuery:
    return LabeledQuery(qid, f"query {qid}", tuple(LabeledDoc(d, s, "bm25") for d, s in scores.items()))


def test_normalize_raw_zscore_temperature() -> None:
    assert normalize_scores([1.0, 3.0], NormalizationConfig("raw")) == [1.0, 3.0]
    assert normalize_scores([1.0, 3.0], NormalizationConfig("zscore")) == pytest.approx([-1.0, 1.0])
    assert normalize_scores([1.0, 3.0], NormalizationConfig("temperature", temperature=2.0)) == [0.5, 1.5]
    assert normalize_scores([2.0, 2.0], NormalizationConfig("zscore")) == [0.0, 0.0]
    with pytest.raises(ConfigError, match="temperature must be a positive number"):
        NormalizationConfig("temperature", temperature=0.0)
    with pytest.raises(ConfigError, match="must be raw, zscore or temperature"):
        NormalizationConfig("softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN or inf"):
        normalize_scores([math.nan], NormalizationConfig())


def test_groups_positive_from_qrels_and_negatives_exclude_judged() -> None:
    labels = [_lq("q1", {"a": 0.0, "b": 5.0, "c": 1.0, "d": 2.0, "e": 3.0})]
    qrels = {"q1": {"a": 1, "c": 2}}
    groups = build_groups(labels, qrels, PairConfig(n_negatives=2, groups_per_query=2), NormalizationConfig("raw"))
    assert [g.doc_ids[0] for g in groups] == ["a", "c"]
    for g in groups:
        assert not set(g.doc_ids[1:]) & {"a", "c"}
        assert len(g.doc_ids) == 3
        assert g.teacher_scores == tuple(labels[0].docs[[d.doc_id for d in labels[0].docs].index(x)].score
                                         for x in g.doc_ids)


def test_groups_teacher_top_and_hard_negatives() -> None:
    labels = [_lq("q1", {"a": 0.0, "b": 5.0, "c": 1.0, "d": 2.0, "e": 3.0})]
    cfg = PairConfig(positive="teacher_top", negatives="teacher_hard", n_negatives=2, groups_per_query=1)
    (g,) = build_groups(labels, {"q1": {"a": 1}}, cfg, NormalizationConfig("zscore"))
    assert g.doc_ids == ("b", "e", "d")  # top is b; judged "a" never a negative; hardest next: e, d
    assert g.teacher_scores[0] > g.teacher_scores[1] > g.teacher_scores[2]


def test_groups_fall_back_to_teacher_top_without_qrels() -> None:
    (g,) = build_groups([_lq("q9", {"x": 1.0, "y": 9.0, "z": 2.0})], None, PairConfig(n_negatives=2),
                        NormalizationConfig())
    assert g.doc_ids[0] == "y"


def test_groups_auto_count_and_mixed_negatives() -> None:
    """Auto groups cover a long candidate list (ceil(100 / 8) = 13 groups); without qrels the positive rotates
    over the teacher's top 3 and each group's negatives rank below its positive; "mixed" puts a different
    slice of the teacher's hardest candidates in each group."""
    scores = {f"d{i:03d}": float(100 - i) for i in range(100)}  # d000 is the teacher's top
    groups = build_groups([_lq("q1", scores)], None, PairConfig(n_negatives=7), NormalizationConfig())
    assert len(groups) == 13
    assert [g.doc_ids[0] for g in groups[:4]] == ["d000", "d001", "d002", "d000"]
    hard = [g.doc_ids[1:4] for g in groups]  # 7 // 2 = 3 hard negatives per group, first in the group
    assert hard[0] == ("d001", "d002", "d003") and hard[1] == ("d005", "d006", "d007")
    for g in groups:
        assert len(set(g.doc_ids)) == 8 and all(d > g.doc_ids[0] for d in g.doc_ids[1:])  # below the positive
        assert all(g.teacher_scores[0] > t for t in g.teacher_scores[1:])
    assert len(build_groups([_lq("q1", scores)], None, PairConfig(n_negatives=7, max_auto_groups=4),
                            NormalizationConfig())) == 4
    # the group budget spreads over the queries: 400 queries x 4 groups, not x 13
    many = [_lq(f"q{i}", scores) for i in range(400)]
    assert len(build_groups(many, None, PairConfig(n_negatives=7), NormalizationConfig())) == 1600
    assert len(build_groups(many, None, PairConfig(n_negatives=7, auto_group_budget=400), NormalizationConfig())) == 400
    # with qrels the judged positives are the positives and nothing judged is a negative
    qrels = {"q1": {"d050": 1, "d060": 1}}
    for g in build_groups([_lq("q1", scores)], qrels, PairConfig(n_negatives=7), NormalizationConfig()):
        assert g.doc_ids[0] in ("d050", "d060") and not {"d050", "d060"} & set(g.doc_ids[1:])


def test_groups_error_when_nothing_usable() -> None:
    with pytest.raises(DataError, match="fewer than 4 non-positive candidates"):
        build_groups([_lq("q1", {"a": 1.0, "b": 0.0})], {}, PairConfig(n_negatives=4), NormalizationConfig())
    with pytest.raises(ConfigError, match="n_negatives must be >= 1"):
        PairConfig(n_negatives=0)


def test_select_layers() -> None:
    assert select_layers(6, 3) == [0, 2, 5]  # round(2.5) == 2
    assert select_layers(6, 2) == [0, 5]
    assert select_layers(6, 1) == [5]
    assert select_layers(6, 6) == list(range(6))
    assert select_layers(6, 3, "first") == [0, 1, 2]
    with pytest.raises(ConfigError, match="cannot keep 7 of 6 layers"):
        select_layers(6, 7)


def test_build_student_drops_layers(tiny_cross_encoder_dir: Path) -> None:
    model, tok = build_student(StudentModelConfig(base=str(tiny_cross_encoder_dir), num_layers=1, max_seq_len=32))
    assert len(model.bert.encoder.layer) == 1 and model.config.num_hidden_layers == 1
    assert tok.model_max_length == 32 and model.config.num_labels == 1
    # a trained cross-encoder as the base ("cut, then distil again", how the L3/L2 students of issue #13 start):
    # its 1-logit head and the kept layer (the last, for 1 of 2) are loaded, not re-initialised
    from transformers import AutoModelForSequenceClassification

    source = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir)
    assert torch.equal(model.classifier.weight, source.classifier.weight)
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight,
                       source.bert.encoder.layer[1].output.dense.weight)
    with pytest.raises(ConfigError, match=r"max_seq_len must be an integer in \[8, 8192\]"):
        StudentModelConfig(max_seq_len=2)
    with pytest.raises(ConfigError, match="max_query_tokens must be a positive integer"):
        StudentModelConfig(max_query_tokens=0)


def test_normalize_run_and_interpolate() -> None:
    fs = {"q": {"a": 10.0, "b": 20.0, "c": 0.0}}
    st = {"q": {"a": 1.0, "b": -1.0}}
    assert normalize_run({"q": {"a": 1.0, "b": 3.0}}, "minmax") == {"q": {"a": 0.0, "b": 1.0}}
    cfg = InterpolationConfig()
    # restricted to student candidates: fs minmax over {a: 10, b: 20} -> a 0, b 1
    out = interpolate_runs(fs, st, 0.25, cfg)
    assert out == {"q": {"a": pytest.approx(0.75), "b": pytest.approx(0.25 - 0.75)}}
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\]"):
        interpolate_runs(fs, st, 1.5, cfg)


def test_tune_alpha_picks_the_better_signal() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    first_stage = {"q1": {"a": 2.0, "b": 1.0}, "q2": {"c": 2.0, "d": 1.0}}  # right
    student = {"q1": {"a": 0.0, "b": 1.0}, "q2": {"c": 0.0, "d": 1.0}}  # wrong
    res = tune_alpha(qrels, first_stage, student, InterpolationConfig(grid_steps=11))
    assert res.alpha > 0.5 and res.dev_score == pytest.approx(1.0) and res.dev_score_student_only < 1.0
    good = tune_alpha(qrels, first_stage, first_stage, InterpolationConfig(grid_steps=11))
    assert good.alpha == 0.0  # ties go to the student
    with pytest.raises(DataError, match="no dev query"):
        tune_alpha({"zz": {"a": 1}}, first_stage, student, InterpolationConfig())


def test_groups_order_equal_teacher_scores_by_the_tie_key_not_the_doc_id() -> None:
    """A run-file teacher gives the candidates it did not rank one floor score: their order (which are hard
    negatives) follows the fixed (qid, doc id) hash, not the ids."""
    from distill.core.cross_encoder import tie_key

    scores = {"top": 9.0, **{f"d{i:02d}": 0.0 for i in range(20)}}
    cfg = PairConfig(positive="teacher_top", negatives="teacher_hard", n_negatives=4, groups_per_query=1)
    (g,) = build_groups([_lq("q1", scores)], None, cfg, NormalizationConfig("raw"))
    floor = sorted((d for d in scores if d != "top"), key=lambda d: tie_key("q1", d))
    assert g.doc_ids == ("top", *floor[:4]) and list(g.doc_ids[1:]) != sorted(scores)[:4]
