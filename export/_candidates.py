"""Real (query, candidates) lists for the gates, calibration and the compression report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from distill.core.datasets import bundled_dataset
from distill.core.formats import Document, Qrels, Query, Run

logger = logging.getLogger(__name__)

DEMO_DIR = bundled_dataset().root


@dataclass
class CandidateLists:
    """``run[qid]`` = first-stage candidates (doc_id -> score); ``qrels`` only when judged."""

    queries: dict[str, Query]
    corpus: dict[str, Document]
    run: Run
    qrels: Qrels | None
    source: str

    def pairs(self, qid: str) -> tuple[list[str], list[tuple[str, str]]]:
        doc_ids = list(self.run[qid])
        text = self.queries[qid].text
        return doc_ids, [(text, self.corpus[d].full_text) for d in doc_ids]

    def pairs_by_query(self) -> dict[str, list[tuple[str, str]]]:
        """qid -> its (query, passage) pairs in first-stage order, for every query of the run."""
        return {qid: self.pairs(qid)[1] for qid in self.run}

    def subset(self, n_queries: int, n_candidates: int) -> CandidateLists:
        """First ``n_queries`` queries (sorted ids, deterministic), each with its top ``n_candidates``."""
        qids = [q for q in sorted(self.run) if q in self.queries][:n_queries]
        run = {q: dict(sorted(self.run[q].items(), key=lambda kv: -kv[1])[:n_candidates]) for q in qids}
        return CandidateLists(self.queries, self.corpus, run, self.qrels, self.source)


_BM25_CACHE: dict[tuple[str, int], CandidateLists] = {}


def demo_candidates(split: str = "test", top_k: int = 20) -> CandidateLists:
    """BM25 top-``top_k`` of the bundled scifact_mini ``split`` queries (cached per process)."""
    from distill.core.bm25 import BM25Index
    from distill.core.formats import read_corpus, read_qrels, read_queries

    key = (split, top_k)
    if key not in _BM25_CACHE:
        corpus = read_corpus(DEMO_DIR / "corpus.jsonl")
        queries = read_queries(DEMO_DIR / f"queries.{split}.tsv")
        run = BM25Index(corpus).search(queries, top_k=top_k)
        _BM25_CACHE[key] = CandidateLists(queries, corpus, run, read_qrels(DEMO_DIR / f"qrels.{split}.txt"),
                                          f"scifact_mini {split} BM25 top-{top_k}")
    return _BM25_CACHE[key]


def eval_candidates(queries: Path, qrels: Path | None, run: Path, corpus: Path,
                    source: str | None = None) -> CandidateLists:
    from distill.core.errors import DataError
    from distill.core.formats import read_corpus, read_qrels, read_queries, read_run

    qs = read_queries(queries)
    docs = read_corpus(corpus)
    first = read_run(run)
    missing_q = sorted(set(first) - set(qs))
    if missing_q:
        raise DataError(f"{len(missing_q)} run query ids have no query text (e.g. {missing_q[:3]})", path=run,
                        expected=f"every query id in the run to appear in {queries}")
    missing_d = sorted({d for docs_ in first.values() for d in docs_} - set(docs))
    if missing_d:
        raise DataError(f"{len(missing_d)} run doc ids are not in the corpus (e.g. {missing_d[:3]})", path=run,
                        expected=f"every doc id in the run to appear in {corpus}")
    return CandidateLists(qs, docs, first, read_qrels(qrels) if qrels else None, source or f"eval run {run}")
