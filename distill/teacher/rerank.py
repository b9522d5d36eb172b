"""Rerank a first-stage run with the teacher (or the zero-shot yes/no prompt) to measure teacher quality."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Protocol

from distill.core.formats import Document, Query, Run

__all__ = ["PairScorer", "rerank_run", "rerank_with"]

logger = logging.getLogger(__name__)


class PairScorer(Protocol):
    def score_triples(self, triples: list[tuple[str, str, str]]) -> list[float]: ...


def rerank_with(scorer: PairScorer, corpus: Mapping[str, Document], queries: Mapping[str, Query], run: Run,
                top_k: int, progress: bool = False) -> Run:
    """Score each query's top ``top_k`` docs of ``run``; docs ranked below ``top_k`` are dropped.

    Queries absent from ``queries`` are skipped with a warning; unknown doc ids are skipped too.
    """
    out: Run = {}
    qids = [q for q in run if q in queries]
    if len(qids) < len(run):
        logger.warning("rerank: %d run queries have no text in the queries file; skipped", len(run) - len(qids))
    it = qids
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(qids, desc="rerank", unit="query")
    for qid in it:
        top = [d for d, _ in sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))[:top_k] if d in corpus]
        scores = (scorer.score_triples([(queries[qid].text, corpus[d].title, corpus[d].text) for d in top])
                  if top else [])
        out[qid] = dict(zip(top, scores, strict=True))
    return out


def rerank_run(teacher_dir: str | os.PathLike[str], corpus: Mapping[str, Document], queries: Mapping[str, Query],
               run: Run, top_k: int = 100, batch_size: int = 8, max_length: int = 192, device: str = "auto",
               progress: bool = False) -> Run:
    """Teacher scores (raw logits) for the top ``top_k`` of ``run``; write it with
    ``distill.core.formats.write_run``."""
    from distill.teacher.decoder_ranker import TeacherScorer

    scorer = TeacherScorer(teacher_dir, batch_size=batch_size, max_length=max_length, device=device)
    return rerank_with(scorer, corpus, queries, run, top_k, progress)
