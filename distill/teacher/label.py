"""``distilrank teacher label``: teacher scores (raw logits) for candidate lists of training queries.

Output follows :mod:`distill.labels`; one line is appended (and fsynced) per query, so an interrupted
run resumes with the queries not yet labelled. The manifest is written last, when every query is done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from distill.data import read_corpus, read_qrels, read_queries
from distill.labels import LabeledDoc, LabeledQuery, append_labels, valid_qids
from distill.manifest import is_complete, write_manifest
from distill.teacher._data import subsample
from distill.teacher.candidates import gather_candidates
from distill.teacher.config import LabelConfig
from distill.teacher.scoring import TeacherScorer

__all__ = ["LABELS_FILE", "run_label"]

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.jsonl"


def run_label(config: LabelConfig, out_dir: str | Path, progress: bool = False) -> Path:
    out_dir = Path(out_dir)
    out = out_dir / LABELS_FILE
    resolved = config.to_dict()
    if is_complete(out_dir, resolved) and out.exists():
        logger.info("label: %s is complete for this config; skipping", out)
        return out
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    queries = read_queries(config.queries)
    corpus = read_corpus(config.corpus)
    qrels = read_qrels(config.qrels) if config.qrels else None
    qids = subsample(list(queries), config.max_queries, config.seed)
    done = valid_qids(out)
    todo = {q: queries[q] for q in qids if q not in done}
    logger.info("label: %d queries, %d already labelled, %d to go", len(qids), len(qids) - len(todo), len(todo))
    n_docs = 0
    if todo:
        cands = gather_candidates(todo, corpus, config.n_bm25, config.n_dense, config.n_random, qrels,
                                  config.dense_model, out_dir / "cache", config.seed)
        scorer = TeacherScorer(config.teacher, batch_size=config.batch_size, max_length=config.max_length,
                               device=config.device)
        items = list(todo.items())
        if progress:
            from tqdm.auto import tqdm

            items = tqdm(items, desc="label", unit="query")
        for qid, query in items:
            docs = cands[qid]
            scores = scorer.score_triples([(query.text, corpus[d].title, corpus[d].text) for d, _ in docs])
            record = LabeledQuery(qid, query.text, tuple(LabeledDoc(d, s, src) for (d, src), s in zip(docs, scores, strict=True)))
            append_labels(out, record)
            n_docs += len(docs)
    inputs = {"teacher_spec": str(Path(config.teacher) / "teacher.json"), "queries": config.queries, "corpus": config.corpus}
    if config.qrels:
        inputs["qrels"] = config.qrels
    write_manifest(out_dir, "teacher-label", resolved, inputs=inputs,
                   metrics={"queries": len(qids), "labelled_this_run": len(todo), "docs_scored_this_run": n_docs},
                   wall_time_s=time.perf_counter() - started)
    return out
