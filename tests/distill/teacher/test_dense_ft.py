"""Fine-tuning the dense teacher member on training qrels (tiny BERT, bundled scifact_mini)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.bm25 import BM25Index
from distill.core.errors import ConfigError, DataError
from distill.core.formats import read_corpus, read_qrels, read_queries
from distill.teacher.dense_ft import DenseFineTuneConfig, fine_tune_dense, training_triples


@pytest.fixture(scope="module")
def mini(demo_data: Path) -> dict:
    corpus = read_corpus(demo_data / "corpus.jsonl")
    return {"corpus": corpus, "queries": read_queries(demo_data / "queries.train.tsv"),
            "qrels": read_qrels(demo_data / "qrels.train.txt"), "bm25": BM25Index(corpus)}


def test_triples_leave_out_held_out_queries_and_judged_negatives(mini: dict) -> None:
    cfg = DenseFineTuneConfig(hard_negative_depth=5)
    held_out = sorted(mini["qrels"])[:10]
    triples = training_triples(mini["queries"], mini["qrels"], mini["corpus"], mini["bm25"], cfg, held_out)
    texts = {mini["queries"][q].text for q in held_out}
    assert triples and not {t[0] for t in triples} & texts
    by_text = {mini["corpus"][d].full_text: d for d in mini["corpus"]}
    qid_of = {mini["queries"][q].text: q for q in mini["queries"]}
    for query, pos, neg in triples:
        judged = mini["qrels"][qid_of[query]]
        assert judged.get(by_text[pos], 0) >= 1 and judged.get(by_text[neg], 0) < 1


def test_fine_tune_writes_a_loadable_model_and_the_runner_reuses_it(mini: dict, tiny_cross_encoder_dir: Path,
                                                                    tmp_path: Path) -> None:
    from distill.core.stage_runner import run_standalone
    from distill.teacher.candidates import DenseRetriever

    cfg = DenseFineTuneConfig(base=str(tiny_cross_encoder_dir), batch_size=8, max_seq_length=32)

    def stage() -> Path:
        return run_standalone(tmp_path / "ft", cfg.to_dict(), lambda d: {"model": fine_tune_dense(
            cfg, mini["queries"], mini["qrels"], mini["corpus"], d, bm25=mini["bm25"])})["model"]

    out = stage()
    docs = dict(list(mini["corpus"].items())[:20])
    q = {k: mini["queries"][k] for k in sorted(mini["queries"])[:2]}
    cands = {k: list(docs) for k in q}
    tuned = DenseRetriever(docs, str(out)).score_docs(q, cands)
    base = DenseRetriever(docs, str(tiny_cross_encoder_dir)).score_docs(q, cands)
    assert tuned.keys() == base.keys() and tuned != base  # the weights moved
    stamp = (out / "modules.json").stat().st_mtime_ns
    assert stage() == out
    assert (out / "modules.json").stat().st_mtime_ns == stamp  # reused by the stage runner, not retrained


def test_too_few_pairs_and_bad_config_are_clear_errors(mini: dict, tiny_cross_encoder_dir: Path,
                                                       tmp_path: Path) -> None:
    cfg = DenseFineTuneConfig(base=str(tiny_cross_encoder_dir), batch_size=8)
    with pytest.raises(DataError, match="fewer than one batch"):
        fine_tune_dense(cfg, mini["queries"], mini["qrels"], mini["corpus"], tmp_path / "ft",
                        exclude=list(mini["queries"]), bm25=mini["bm25"])
    assert not (tmp_path / "ft" / "model").exists()
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        DenseFineTuneConfig(batch_size=1)
    with pytest.raises(ConfigError, match="dense_ft"):
        DenseFineTuneConfig.from_dict({"epoch": 2})
