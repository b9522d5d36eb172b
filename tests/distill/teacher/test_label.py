from __future__ import annotations

import json
import math
import random

import pytest

from distill.core.errors import ConfigError
from distill.core.formats import read_qrels
from distill.core.label_files import read_labels
from distill.teacher.candidates import merge_candidates
from distill.teacher.config import LabelConfig
from distill.teacher.decoder_ranker import TeacherRanker, TeacherScorer, TeacherSpec, save_teacher
from distill.teacher.label import run_label
from distill.teacher.synthesize import clean_query, crop_sentences, keep_query
from tests.teacher_data import write_mini


@pytest.fixture(scope="module")
def tiny_teacher(tiny_decoder_dir, tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("teacher")
    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    save_teacher(TeacherRanker(AutoModelForCausalLM.from_pretrained(tiny_decoder_dir)), tok, out,
                 TeacherSpec(max_length=48, end_token_id=2))
    return out


def test_merge_candidates_dedups_and_joins_sources():
    merged = merge_candidates({"bm25": ["a", "b"], "dense": ["b", "c"], "random": ["a", "d"], "positive": ["b"]})
    assert merged == [("a", "bm25+random"), ("b", "bm25+dense+positive"), ("c", "dense"), ("d", "random")]


def test_label_schema_sources_scores_and_resume(tiny_teacher, demo_data, tmp_path, monkeypatch):
    mini = write_mini(demo_data, tmp_path / "data", n_queries=3, n_extra_docs=25)
    cfg = LabelConfig(teacher=str(tiny_teacher), queries=str(mini["queries"]), corpus=str(mini["corpus"]),
                      qrels=str(mini["qrels"]), n_bm25=5, n_dense=4, n_random=3, device="cpu", max_length=48)
    out_dir = tmp_path / "labels"
    # crash after the first query: the file keeps one complete line and no manifest
    calls = {"n": 0}
    real = TeacherScorer.score_triples

    def flaky(self, triples):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, triples)

    monkeypatch.setattr(TeacherScorer, "score_triples", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_label(cfg, out_dir)
    assert len(read_labels(out_dir / "labels.jsonl")) == 1 and not (out_dir / "manifest.json").exists()
    monkeypatch.setattr(TeacherScorer, "score_triples", real)
    path = run_label(cfg, out_dir)
    labels = read_labels(path)
    qrels = read_qrels(mini["qrels"])
    assert sorted(r.qid for r in labels) == sorted(qrels)  # each query exactly once after the resume
    assert json.loads((out_dir / "manifest.json").read_text())["metrics"]["labelled_this_run"] == 2
    assert list((out_dir / "cache").glob("dense-*.npy"))  # corpus embeddings cached
    for rec in labels:
        ids = [d.doc_id for d in rec.docs]
        assert len(ids) == len(set(ids)) and all(math.isfinite(d.score) for d in rec.docs)
        sources = {s for d in rec.docs for s in d.source.split("+")}
        assert sources <= {"bm25", "dense", "random", "positive"} and {"bm25", "dense", "positive"} <= sources
        pos = {d.doc_id for d in rec.docs if "positive" in d.source}
        assert pos == {d for d, r in qrels[rec.qid].items() if r > 0}
    # scores are the teacher's raw logits for (query, doc)
    rec = labels[0]
    from distill.core.formats import read_corpus

    corpus = read_corpus(mini["corpus"])
    doc = rec.docs[0]
    raw = TeacherScorer(tiny_teacher, device="cpu", max_length=48).score_triples(
        [(rec.query, corpus[doc.doc_id].title, corpus[doc.doc_id].text)])[0]
    assert doc.score == pytest.approx(raw, abs=1e-4)


def test_label_config_errors():
    with pytest.raises(ConfigError, match="the llm source needs --teacher"):
        LabelConfig(queries="q", corpus="c").require_data()
    with pytest.raises(ConfigError, match="the run source needs --run"):
        LabelConfig(source="run", queries="q", corpus="c")
    with pytest.raises(ConfigError, match="the endpoint source needs --endpoint-url"):
        LabelConfig(source="ensemble", members=("dense", "endpoint"), queries="q", corpus="c")
    with pytest.raises(ConfigError, match=r"shard must be 'I/N'"):
        LabelConfig(source="bm25", queries="q", corpus="c", shard="4/4")
    with pytest.raises(ConfigError, match="n_bm25, n_dense and n_random must be >= 0"):
        LabelConfig(teacher="t", queries="q", corpus="c", n_bm25=-1)


def test_synthesis_cropping_cleaning_and_filters():
    text = "First sentence here. Second one follows. Third is last. Fourth (extra) too."
    crop = crop_sentences(text, 2, random.Random(0), 800)
    assert crop in {"First sentence here. Second one follows.", "Second one follows. Third is last.",
                    "Third is last. Fourth (extra) too."}
    assert clean_query('Query: "What causes scurvy?"\nExplanation: ...') == "What causes scurvy?"
    assert keep_query("what causes scurvy in sailors", "Scurvy is a disease.", 3, 24)
    assert not keep_query("scurvy", "Scurvy is a disease.", 3, 24)  # too short
    assert not keep_query("Scurvy is a disease", "Scurvy is a disease. It is old.", 3, 24)  # a copy



def test_synthesize_filters_meta_copies_lengths_dups_and_crops(tiny_decoder_dir, demo_data, tmp_path, monkeypatch):
    """Generation is replaced by canned outputs (a random tiny LM writes noise); everything else is real.
    The canned outputs are the meta-text a small instruct model really produced ("The search query is:")."""
    from distill.core.errors import DataError
    from distill.core.formats import read_queries
    from distill.teacher import synthesize as synth
    from distill.teacher.config import SynthConfig

    mini = write_mini(demo_data, tmp_path / "data", n_queries=1, n_extra_docs=10)
    seen: list[str] = []

    def fake_generate(config, passages, progress, partial=None):
        seen.extend(passages)
        canned = ['Query: "what do myeloid suppressor cells do in MDS?"',
                  "This passage provides a clear explanation of the difference between subcutaneous fat "
                  "and external fat.",
                  "The search query is:", "Here is the query:", "too short",
                  "what do myeloid suppressor cells do in mds",  # a duplicate after normalisation
                  " ".join(passages[6].split()[:6])]  # a verbatim copy of the passage
        return canned[: len(passages)]

    monkeypatch.setattr(synth, "_generate", fake_generate)
    cfg = SynthConfig(corpus=str(mini["corpus"]), generator=str(tiny_decoder_dir), num_docs=7, device="cpu",
                      roundtrip_k=0, crop_fallback=False)
    q_path, qrels_path = synth.synthesize_queries(cfg, tmp_path / "syn")
    queries, qrels = read_queries(q_path), read_qrels(qrels_path)
    assert [q.text for q in queries.values()] == ["what do myeloid suppressor cells do in MDS?"]
    assert set(qrels) == set(queries)
    report = json.loads((tmp_path / "syn" / "synth_report.json").read_text())
    assert report["rejected"] == {"copy": 1, "duplicate": 1, "length": 1, "meta": 3}
    assert report["kept"] == 1 and report["cropped"] == 0
    prompt = synth._prompt(seen[0])
    assert prompt.count("Passage:") == 4 and prompt.endswith("Query:") and "<|im_start|>" not in prompt
    # the crop fallback gives every rejected document a cropped query instead
    cfg2 = SynthConfig(corpus=str(mini["corpus"]), generator=str(tiny_decoder_dir), num_docs=7, device="cpu",
                       roundtrip_k=0)
    synth.synthesize_queries(cfg2, tmp_path / "syn2")
    report2 = json.loads((tmp_path / "syn2" / "synth_report.json").read_text())
    assert report2["kept_generated"] == 1 and report2["cropped"] == 6 and report2["kept"] == 7
    # nothing usable and no fallback: a clear error
    monkeypatch.setattr(synth, "_generate", lambda config, passages, progress, partial=None: ["x"] * len(passages))
    with pytest.raises(DataError, match="all 7 generated queries were filtered out"):
        synth.synthesize_queries(cfg, tmp_path / "syn3")


def test_synthesize_round_trip_keeps_queries_that_find_their_document(tiny_decoder_dir, demo_data, tmp_path,
                                                                       monkeypatch):
    from distill.core.formats import read_corpus
    from distill.teacher import synthesize as synth
    from distill.teacher.config import SynthConfig

    mini = write_mini(demo_data, tmp_path / "data", n_queries=1, n_extra_docs=30)
    corpus = read_corpus(mini["corpus"])
    titles = [d.title for d in corpus.values()]

    def fake_generate(config, passages, progress, partial=None):
        # even: the passage's own longest words (finds its document); odd: other documents' titles
        return [" ".join(sorted(p.split(), key=len)[-4:]) if i % 2 == 0 else titles[-1 - i]
                for i, p in enumerate(passages)]

    monkeypatch.setattr(synth, "_generate", fake_generate)
    cfg = SynthConfig(corpus=str(mini["corpus"]), generator=str(tiny_decoder_dir), num_docs=6, device="cpu",
                      roundtrip_k=1, crop_fallback=False, min_words=2)
    synth.synthesize_queries(cfg, tmp_path / "syn")
    report = json.loads((tmp_path / "syn" / "synth_report.json").read_text())
    assert report["rejected"].get("roundtrip", 0) >= 1 and report["kept"] >= 1
    from distill.core.bm25 import BM25Index
    from distill.core.formats import read_queries

    kept = read_queries(tmp_path / "syn" / "queries.tsv")
    top1 = BM25Index(corpus).search(kept, top_k=1)
    source = read_qrels(tmp_path / "syn" / "qrels.txt")
    assert all(set(top1[q]) == set(source[q]) for q in kept)  # every kept query finds its own document first



def test_synthesize_killed_mid_generation_resumes_after_the_last_whole_batch(tiny_decoder_dir, demo_data, tmp_path,
                                                                               monkeypatch, caplog):
    """Real greedy generation with the tiny decoder, 3 batches. A kill after the second batch is appended (the
    fault point raises here, as the pipeline's SIGKILL would end the process), plus a line torn by the kill:
    the rerun generates only the third batch, and its files equal an uninterrupted run's."""
    import logging

    from distill.teacher import synthesize as synth
    from distill.teacher.config import SynthConfig

    mini = write_mini(demo_data, tmp_path / "data", n_queries=1, n_extra_docs=10)
    cfg = SynthConfig(corpus=str(mini["corpus"]), generator=str(tiny_decoder_dir), num_docs=6, batch_size=2,
                      max_new_tokens=6, device="cpu", roundtrip_k=0)
    synth.synthesize_queries(cfg, tmp_path / "whole")
    assert not (tmp_path / "whole" / synth.PARTIAL_FILE).exists()

    batches = []

    def kill_after_two(name):
        batches.append(name)
        if len(batches) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(synth, "fault_point", kill_after_two)
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize_queries(cfg, tmp_path / "killed")
    partial = tmp_path / "killed" / synth.PARTIAL_FILE
    assert len(partial.read_text().splitlines()) == 3  # the key line + 2 batches
    with partial.open("a") as fh:
        fh.write('{"start": 4, "out": ["torn')
    monkeypatch.setattr(synth, "fault_point", lambda name: batches.append(name))
    with caplog.at_level(logging.INFO, logger="distill.teacher.synthesize"):
        synth.synthesize_queries(cfg, tmp_path / "killed")
    assert "resuming after 2 of 3 batches" in caplog.text
    assert len(batches) == 3  # only the last batch was generated again
    for name in (synth.QUERIES_FILE, synth.QRELS_FILE):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert not partial.exists()
    # a partial file written under another config or corpus (another key) is not reused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / synth.PARTIAL_FILE).write_text('{"key": "x"}\n{"start": 0, "out": ["a b c", "d e f"]}\n')
    synth.synthesize_queries(cfg, tmp_path / "other")
    assert ((tmp_path / "other" / synth.QUERIES_FILE).read_text()
            == (tmp_path / "whole" / synth.QUERIES_FILE).read_text())


def test_an_interrupted_ensemble_fit_keeps_the_members_already_scored(tmp_path) -> None:
    """Killed while the fit queries are scored member by member: the next run scores only what is missing."""
    from distill.core.formats import Query
    from distill.teacher.label import _fit_runs

    calls: list[str] = []

    class Member:
        def __init__(self, name: str, fail: bool = False):
            self.name, self.fail = name, fail

        def score(self, queries, cands):
            calls.append(self.name)
            if self.fail:
                raise KeyboardInterrupt
            return {q: {d: float(i) for i, d in enumerate(c)} for q, c in cands.items()}

    class Factory:
        def __init__(self, fail: set[str]):
            self.fail = fail

        def build(self, name: str) -> Member:
            return Member(name, name in self.fail)

    cfg = LabelConfig(source="ensemble", members=("dense", "llm"), teacher="t", queries="q", corpus="c")
    queries, cands, key = {"q1": Query("q1", "text")}, {"q1": ["d1", "d2"]}, {"fit": 1}
    with pytest.raises(KeyboardInterrupt):
        _fit_runs(cfg, Factory({"llm"}), {}, queries, cands, tmp_path, key)
    runs = _fit_runs(cfg, Factory(set()), {}, queries, cands, tmp_path, key)
    assert calls == ["dense", "llm", "llm"] and set(runs) == {"dense", "llm"}
    assert runs["dense"] == {"q1": {"d1": 0.0, "d2": 1.0}}
