"""Candidate lists for labelling (TWOLAR-style diversity): BM25, dense bi-encoder, random, judged positives.

Candidates are de-duplicated per query; a document found by several sources records them joined
with ``+`` in a fixed order (``run+bm25+dense+random+positive``; ``run``: a teacher run's own top list).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from distill.core.atomic_io import atomic_write, config_hash
from distill.core.base_models import resolve_student_base
from distill.core.bm25 import BM25Index
from distill.core.formats import Document, Qrels, Query, Run

__all__ = ["SOURCES", "DenseRetriever", "gather_candidates", "merge_candidates"]

logger = logging.getLogger(__name__)

SOURCES = ("run", "bm25", "dense", "random", "positive")


class DenseRetriever:
    """Cosine top-k with a sentence-transformers bi-encoder; corpus embeddings cached as ``.npy``.

    The cache file name hashes the model path and the doc ids + texts, so a changed corpus is re-embedded.
    """

    def __init__(self, corpus: Mapping[str, Document], model: str = "default", cache_dir: Path | None = None,
                 batch_size: int = 64, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        path = resolve_student_base(model)
        self._doc_ids = list(corpus)
        self._model = SentenceTransformer(str(path), device=device)
        key = config_hash({"model": str(path), "docs": [(d, corpus[d].full_text) for d in self._doc_ids]})
        cache = cache_dir / f"dense-{key}.npy" if cache_dir else None
        if cache is not None and cache.exists():
            self._emb = np.load(cache)
            logger.info("dense: loaded %d cached corpus embeddings from %s", len(self._emb), cache)
        else:
            texts = [corpus[d].full_text for d in self._doc_ids]
            self._emb = self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            if cache is not None:
                with atomic_write(cache, mode="wb") as fh:
                    np.save(fh, self._emb)

    def search(self, queries: Mapping[str, Query], top_k: int) -> Run:
        qids = list(queries)
        q = self._model.encode([queries[x].text for x in qids], normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        sims = q @ self._emb.T
        k = min(top_k, sims.shape[1])
        run: Run = {}
        for row, qid in enumerate(qids):
            top = np.argpartition(-sims[row], k - 1)[:k]
            top = top[np.argsort(-sims[row][top])]
            run[qid] = {self._doc_ids[i]: float(sims[row][i]) for i in top}
        return run

    def score_docs(self, queries: Mapping[str, Query], candidates: Mapping[str, Sequence[str]]) -> Run:
        """Cosine of each query with each of its candidates."""
        if not hasattr(self, "_pos"):
            self._pos = {d: i for i, d in enumerate(self._doc_ids)}
        qids = list(candidates)
        q = self._model.encode([queries[x].text for x in qids], normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        run: Run = {}
        for row, qid in enumerate(qids):
            docs = list(candidates[qid])
            sims = self._emb[[self._pos[d] for d in docs]] @ q[row]
            run[qid] = dict(zip(docs, sims.astype(float).tolist(), strict=True))
        return run


def merge_candidates(per_source: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """[(doc_id, "src1+src2")] in first-seen order over :data:`SOURCES`, each doc once."""
    sources: dict[str, list[str]] = {}
    for src in SOURCES:
        for doc_id in per_source.get(src, []):
            seen = sources.setdefault(doc_id, [])
            if src not in seen:
                seen.append(src)
    return [(d, "+".join(s)) for d, s in sources.items()]


def gather_candidates(queries: Mapping[str, Query], corpus: Mapping[str, Document], n_bm25: int, n_dense: int,
                      n_random: int, qrels: Qrels | None = None, dense_model: str = "default",
                      cache_dir: Path | None = None, seed: int = 13, bm25: BM25Index | None = None,
                      dense: DenseRetriever | None = None) -> dict[str, list[tuple[str, str]]]:
    """qid -> de-duplicated [(doc_id, source)] from all configured sources (pass built indexes to reuse them)."""
    bm25_run = (bm25 or BM25Index(corpus)).search(queries, top_k=n_bm25) if n_bm25 else {}
    dense_run = ((dense or DenseRetriever(corpus, dense_model, cache_dir)).search(queries, top_k=n_dense)
                 if n_dense else {})
    doc_ids = list(corpus)
    out: dict[str, list[tuple[str, str]]] = {}
    for qid in queries:
        rng = random.Random(f"{seed}:{qid}")
        per = {
            "bm25": sorted(bm25_run.get(qid, {}), key=lambda d: -bm25_run[qid][d]),
            "dense": sorted(dense_run.get(qid, {}), key=lambda d: -dense_run[qid][d]),
            "random": rng.sample(doc_ids, min(n_random, len(doc_ids))),
            "positive": [d for d, rel in (qrels or {}).get(qid, {}).items() if rel > 0 and d in corpus],
        }
        out[qid] = merge_candidates(per)
    return out
