"""Realistic request payloads: real queries with their BM25 first-stage candidate texts."""

from __future__ import annotations

import json
import os
from pathlib import Path

from distill._io import atomic_write
from distill.errors import ConfigError

__all__ = ["DEMO_DATASET", "build_payloads", "read_payloads"]

DEMO_DATASET = Path(__file__).resolve().parent.parent / "distill" / "datasets" / "scifact_mini"


def build_payloads(out: str | os.PathLike[str], passages: int, corpus: str | os.PathLike[str] | None = None,
                   queries: str | os.PathLike[str] | None = None, max_queries: int = 50) -> Path:
    """Write ``[{"query": str, "documents": [str, ...]}, ...]`` with exactly ``passages`` docs each."""
    from distill.bm25 import BM25Index
    from distill.data import read_corpus, read_queries

    if passages < 1:
        raise ConfigError(f"--passages must be >= 1, got {passages}")
    docs = read_corpus(corpus or DEMO_DATASET / "corpus.jsonl")
    qs = read_queries(queries or DEMO_DATASET / "queries.test.tsv")
    qs = dict(list(qs.items())[:max_queries])
    run = BM25Index(docs).search(qs, top_k=passages)
    payloads = []
    for qid, hits in run.items():
        ranked = sorted(hits, key=hits.__getitem__, reverse=True)
        if len(ranked) < passages:
            continue  # keep the request size exact so latencies are comparable
        payloads.append({"query": qs[qid].text, "documents": [docs[d].full_text for d in ranked]})
    if not payloads:
        raise ConfigError(f"no query has {passages} BM25 candidates; lower --passages")
    with atomic_write(out) as fh:
        json.dump(payloads, fh)
    return Path(out)


def read_payloads(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
