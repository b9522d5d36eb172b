"""Shared helpers for the student tests: a small teacher-label file built from the demo data."""

from __future__ import annotations

from pathlib import Path

from distill.core.bm25 import BM25Index
from distill.core.formats import read_corpus, read_qrels, read_queries, write_run
from distill.core.label_files import LabeledDoc, LabeledQuery, append_labels


def make_labels(demo: Path, out: Path, n_queries: int = 24, depth: int = 10) -> dict[str, Path]:
    """Labels for the first ``n_queries`` train queries: BM25 top-``depth`` plus judged positives.

    The fake teacher gives judged positives 4 + bm25/10 and others bm25/10, so a student that learns
    it ranks positives first; scores are raw "logits" per the label contract.
    """
    corpus = read_corpus(demo / "corpus.jsonl")
    queries = dict(list(read_queries(demo / "queries.train.tsv").items())[:n_queries])
    qrels = read_qrels(demo / "qrels.train.txt")
    run = BM25Index(corpus).search(queries, top_k=depth)
    labels = out / "labels.jsonl"
    for qid, q in queries.items():
        docs = dict(run.get(qid, {}))
        for d in qrels.get(qid, {}):
            docs.setdefault(d, 0.0)
        scored = [LabeledDoc(d, (4.0 if qrels.get(qid, {}).get(d, 0) >= 1 else 0.0) + s / 10, "bm25")
                  for d, s in docs.items()]
        append_labels(labels, LabeledQuery(qid, q.text, tuple(scored)))
    run_path = write_run(out / "train_bm25.trec", run)
    return {"labels": labels, "corpus": demo / "corpus.jsonl", "qrels": demo / "qrels.train.txt", "run": run_path}
