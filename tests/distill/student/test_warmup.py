"""The warm-up on the corpus itself: weak queries, their ensemble labels, the auto rule, and a warmed student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.core.errors import ConfigError
from distill.core.formats import Document, read_corpus
from distill.student.warmup import WarmupConfig, build_weak_queries, decide_warmup, label_weak_queries

CORPUS = {
    "a": Document("a", "Protein folding in bacteria", "Chaperones assist the folding of newly made proteins in the "
                  "cytoplasm of bacteria under heat stress and other conditions that favour aggregation."),
    "b": Document("b", "", "Fever is caused by pyrogens released by the immune system during infection, which reset "
                  "the hypothalamic set point and raise body temperature for some hours."),
    "c": Document("c", "Short", "Too short."),
    "d": Document("d", "Vitamin D and bone density in older adults", "Supplements of vitamin D raise serum levels "
                  "but their effect on fractures in older adults living at home remains small in most trials."),
}


def test_weak_queries_are_titles_and_crops_of_their_source() -> None:
    cfg = WarmupConfig(n_queries=10, crop_min_words=4, crop_max_words=6, query_kind="mixed")
    weak = build_weak_queries(CORPUS, cfg)
    assert weak == build_weak_queries(CORPUS, cfg)  # seeded
    assert {src for _, src in weak.values()} == {"a", "b", "d"}  # "c" has neither 4 words of text nor a title
    for qid, (query, src) in weak.items():
        assert qid == query.qid and qid.endswith(f"-{src}")
        if qid.startswith("warmup-title-"):
            assert query.text == CORPUS[src].title
        else:
            assert qid.startswith("warmup-crop-") and 4 <= len(query.text.split()) <= 6
            assert query.text in CORPUS[src].text
    crops = build_weak_queries(CORPUS, WarmupConfig(n_queries=10, crop_min_words=4, crop_max_words=6,
                                                    query_kind="crop"))
    assert all(q.startswith("warmup-crop-") for q in crops)


def test_auto_warms_up_below_the_query_threshold_only() -> None:
    assert decide_warmup(WarmupConfig(), 50) == (False, "warmup.mode = off")
    assert decide_warmup(WarmupConfig(mode="auto"), 50) == (True, "auto: 50 training queries < 200")
    assert decide_warmup(WarmupConfig(mode="auto"), 200) == (False, "auto: 200 training queries >= 200")
    assert decide_warmup(WarmupConfig(mode="on"), 5000)[0]
    with pytest.raises(ConfigError, match="warmup.mode must be auto, on or off"):
        WarmupConfig(mode="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_candidates"):
        WarmupConfig(n_candidates=3, n_negatives=7)


def test_weak_labels_hold_the_source_and_its_neighbours_scored_by_the_ensemble(demo_data: Path,
                                                                              tiny_cross_encoder_dir: Path,
                                                                              tmp_path: Path) -> None:
    corpus = dict(list(read_corpus(demo_data / "corpus.jsonl").items())[:120])
    cfg = WarmupConfig(n_queries=6, n_candidates=5, n_negatives=3, dense="on", dense_model=str(tiny_cross_encoder_dir))
    weak = build_weak_queries(corpus, cfg)
    labels = label_weak_queries(weak, corpus, cfg, tmp_path)
    assert [lq.qid for lq in labels] == list(weak)
    for lq in labels:
        ids = [d.doc_id for d in lq.docs]
        assert ids[0] == weak[lq.qid][1] and 6 <= len(ids) <= 11 and len(set(ids)) == len(ids)
        scores = [d.score for d in lq.docs]
        assert abs(sum(scores)) < 1e-6  # equal-weight sum of per-query z-scores has mean 0
    assert list(tmp_path.glob("dense-*.npy"))  # the dense member embedded the corpus once, cached
    bm25_only = label_weak_queries(weak, corpus, WarmupConfig(n_queries=6, n_candidates=5, n_negatives=3, dense="off"))
    assert all(len(lq.docs) <= 6 for lq in bm25_only)


def test_training_with_the_warm_up_records_it_and_reuses_it(demo_data: Path, tiny_cross_encoder_dir: Path,
                                                            tmp_path: Path) -> None:
    from distill.student.train import StudentTrainConfig, train_student
    from tests.student_data import make_labels

    (tmp_path / "labels").mkdir()
    files = make_labels(demo_data, tmp_path / "labels", n_queries=12)
    cfg = StudentTrainConfig.from_dict({
        "model": {"base": str(tiny_cross_encoder_dir), "max_seq_len": 64}, "pairs": {"n_negatives": 3},
        "batch_size": 2, "max_steps": 2, "eval_steps": 2, "learning_rate": 1e-3,
        "warmup": {"mode": "auto", "n_queries": 8, "n_candidates": 5, "n_negatives": 3, "steps": 3, "batch_size": 2,
                   "dense": "off"}})
    res = train_student(cfg, files["labels"], files["corpus"], None, tmp_path / "out")
    assert res.warmup["ran"] and res.warmup["reason"] == "auto: 7 training queries < 200"
    info = res.warmup["info"]
    assert info["weak_queries"] == 8 and info["steps"] == 3 and info["members"] == ["bm25"]
    (kept,) = (tmp_path / "out" / "warmup").glob("warmup-*")
    assert (kept / "weak_labels.jsonl").is_file() and (kept / "model" / "model.safetensors").is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["warmup"]["ran"] and manifest["config_hash"]
    assert json.loads((tmp_path / "out" / "student_report.json").read_text())["warmup"]["ran"]
    again = train_student(cfg, files["labels"], files["corpus"], None, tmp_path / "out", resume=False)
    assert again.warmup["info"]["reused"] == str(kept)
