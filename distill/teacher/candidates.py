"""Candidate lists for labelling (TWOLAR-style diversity): BM25, dense bi-encoder, random, judged positives.

Candidates are de-duplicated per query; a document found by several sources records them joined
with ``+`` in a fixed order (``run+bm25+dense+random+positive``; ``run``: a teacher run's own top list).
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from distill.atomic_io import atomic_write, config_hash, sha256_file
from distill.base_models import resolve_student_base
from distill.bm25 import BM25Index
from distill.data import Document, Qrels, Query, Run

__all__ = ["SHARED_CACHE_ENV", "SOURCES", "DenseRetriever", "gather_candidates", "merge_candidates"]

logger = logging.getLogger(__name__)

SOURCES = ("run", "bm25", "dense", "random", "positive")


#: a directory of corpus embeddings shared by every run on this machine (read when a run's own cache has none,
#: and written to as well): re-running a pipeline on the same corpus and model embeds it once
SHARED_CACHE_ENV = "DISTILRANK_EMBEDDINGS_CACHE"


@functools.lru_cache(maxsize=16)
def _weights_hash(model_dir: Path) -> str:
    """Content hash of a model dir's weight files: a model retrained in place is re-embedded."""
    files = sorted(p for p in Path(model_dir).rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    return config_hash([(str(p.relative_to(model_dir)), sha256_file(p)) for p in files])


class DenseRetriever:
    """Cosine top-k with a sentence-transformers bi-encoder; corpus embeddings cached as ``.npy``.

    The cache file name hashes the model (path and weights) and the doc ids + texts, so a changed corpus or
    a retrained model is re-embedded. ``cache_dir`` is the run's cache; ``$DISTILRANK_EMBEDDINGS_CACHE`` adds
    one shared between runs.
    """

    def __init__(self, corpus: Mapping[str, Document], model: str = "default", cache_dir: Path | None = None,
                 batch_size: int = 64, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        path = resolve_student_base(model)
        self._doc_ids = list(corpus)
        self._model = SentenceTransformer(str(path), device=device)
        key = config_hash({"model": str(path), "weights": _weights_hash(path),
                           "docs": [(d, corpus[d].full_text) for d in self._doc_ids]})
        shared = os.environ.get(SHARED_CACHE_ENV)
        caches = [Path(c) / f"dense-{key}.npy" for c in (cache_dir, shared) if c]
        found = next((c for c in caches if c.exists()), None)
        if found is not None:
            self._emb = np.load(found)
            logger.info("dense: loaded %d cached corpus embeddings from %s", len(self._emb), found)
        else:
            texts = [corpus[d].full_text for d in self._doc_ids]
            self._emb = self._model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        for cache in caches:
            if not cache.exists():
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
    dense_run = (dense or DenseRetriever(corpus, dense_model, cache_dir)).search(queries, top_k=n_dense) if n_dense else {}
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
