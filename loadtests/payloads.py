"""Realistic request payloads: real queries with their BM25 first-stage candidate texts.

A payload is the Cohere-style ``/v1/rerank`` body ``{"query": str, "documents": [str, ...]}``;
documents are :attr:`distill.core.formats.Document.full_text` in BM25 rank order, exactly ``passages`` each,
so every request costs the same and latencies are comparable across runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from distill.core.atomic_io import atomic_write
from distill.core.datasets import bundled_dataset
from distill.core.errors import ConfigError, DataError

__all__ = ["DEMO_DATASET", "build_payloads", "read_payloads"]

logger = logging.getLogger(__name__)

DEMO_DATASET = bundled_dataset().root


def build_payloads(out: str | os.PathLike[str], passages: int, corpus: str | os.PathLike[str] | None = None,
                   queries: str | os.PathLike[str] | None = None, max_queries: int = 50) -> Path:
    """Write ``[{"query": str, "documents": [str, ...]}, ...]`` to ``out`` (atomically); return its path.

    Defaults to the bundled scifact_mini corpus and test queries. Queries with fewer than
    ``passages`` BM25 candidates are skipped.
    """
    from distill.core.bm25 import BM25Index
    from distill.core.formats import read_corpus, read_queries

    if passages < 1 or max_queries < 1:
        raise ConfigError(f"passages and max_queries must be >= 1, got {passages} and {max_queries}")
    docs = read_corpus(corpus or DEMO_DATASET / "corpus.jsonl")
    qs = read_queries(queries or DEMO_DATASET / "queries.test.tsv")
    qs = dict(list(qs.items())[:max_queries])
    run = BM25Index(docs).search(qs, top_k=passages)
    payloads = []
    for qid, hits in run.items():
        ranked = sorted(hits, key=hits.__getitem__, reverse=True)
        if len(ranked) < passages:
            continue
        payloads.append({"query": qs[qid].text, "documents": [docs[d].full_text for d in ranked]})
    if not payloads:
        raise ConfigError(f"no query has {passages} BM25 candidates in a {len(docs)}-document corpus; lower --passages")
    logger.info("built %d payloads of %d passages", len(payloads), passages)
    with atomic_write(out) as fh:
        json.dump(payloads, fh)
    return Path(out)


def read_payloads(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Read and check a payload file written by :func:`build_payloads`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("payload file not found", path=path) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg})", path=path, line=exc.lineno) from exc
    expected = '[{"query": str, "documents": [str, ...]}, ...]'
    if not isinstance(data, list) or not data:
        raise DataError("no payloads", path=path, expected=expected)
    for i, p in enumerate(data):
        if (not isinstance(p, dict) or not isinstance(p.get("query"), str) or not isinstance(p.get("documents"), list)
                or not p["documents"] or not all(isinstance(d, str) for d in p["documents"])):
            raise DataError(f"payload #{i} is malformed", path=path, expected=expected)
    return data
