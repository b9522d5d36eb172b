"""The warm-up on the corpus itself: weak queries, their ensemble labels, the auto rule, and a warmed student."""

from __future__ import annotations

import json
from dataclasses import replace
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
    assert decide_warmup(WarmupConfig(), 50) == (True, "warmup.mode = on")  # the default
    assert decide_warmup(WarmupConfig(mode="off"), 50) == (False, "warmup.mode = off")
    assert decide_warmup(WarmupConfig(mode="auto"), 50) == (True, "auto: 50 training queries < 200")
    assert decide_warmup(WarmupConfig(mode="auto"), 200) == (False, "auto: 200 training queries >= 200")
    assert decide_warmup(WarmupConfig(mode="on"), 5000)[0]
    for mode in ("on", "auto"):  # a base that already ranks keeps its own prior
        ran, why = decide_warmup(WarmupConfig(mode=mode), 50, base_ranks=True)
        assert not ran and "already a 1-logit cross-encoder" in why
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


def _encoder_without_head(cross_encoder: Path, out: Path) -> Path:
    """The tiny cross-encoder's encoder alone, saved as a plain BertModel: a base with no ranking head."""
    from transformers import AutoTokenizer, BertModel

    BertModel.from_pretrained(cross_encoder).save_pretrained(out)
    AutoTokenizer.from_pretrained(cross_encoder).save_pretrained(out)
    return out


def test_only_a_base_with_a_trained_one_logit_head_counts_as_already_ranking(tiny_cross_encoder_dir: Path,
                                                                             tmp_path: Path) -> None:
    from distill.student.model import StudentModelConfig, base_ranks, build_student

    def built_from(base: str, **over: object) -> bool:
        return base_ranks(build_student(StudentModelConfig(base=base, **over))[0])  # type: ignore[arg-type]

    assert built_from(str(tiny_cross_encoder_dir))
    assert built_from(str(tiny_cross_encoder_dir), num_layers=1)  # a cut keeps its head
    assert not built_from(str(_encoder_without_head(tiny_cross_encoder_dir, tmp_path / "e")))
    assert not built_from("default")  # all-MiniLM-L6-v2: a bi-encoder, no head


def test_training_with_the_warm_up_records_it_and_reuses_it(demo_data: Path, tiny_cross_encoder_dir: Path,
                                                            tmp_path: Path) -> None:
    from distill.student.train import StudentTrainConfig, train_student
    from tests.student_data import make_labels

    (tmp_path / "labels").mkdir()
    files = make_labels(demo_data, tmp_path / "labels", n_queries=12)
    base = _encoder_without_head(tiny_cross_encoder_dir, tmp_path / "encoder")
    cfg = StudentTrainConfig.from_dict({
        "model": {"base": str(base), "max_seq_len": 64}, "pairs": {"n_negatives": 3},
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
    ranker = train_student(replace(cfg, model=replace(cfg.model, base=str(tiny_cross_encoder_dir))), files["labels"],
                           files["corpus"], None, tmp_path / "from_a_ranker")
    assert not ranker.warmup["ran"] and not (tmp_path / "from_a_ranker" / "warmup").exists()

    # under torchrun (may_train=False) the kept weights are loaded; with none kept it says how to warm up first
    from distill.core.formats import read_corpus
    from distill.student.model import build_student
    from distill.student.warmup import run_warmup

    corpus = read_corpus(files["corpus"])
    model, tokenizer = build_student(cfg.model)
    loaded = run_warmup(cfg, model, tokenizer, corpus, files["corpus"], tmp_path / "out", 7, may_train=False)
    assert loaded.ran and loaded.info["reused"] == str(kept)
    with pytest.raises(ConfigError, match="runs in one process and no warmed weights are kept"):
        run_warmup(cfg, model, tokenizer, corpus, files["corpus"], tmp_path / "elsewhere", 7, may_train=False)
    assert not (tmp_path / "elsewhere").exists()  # nothing half-written
