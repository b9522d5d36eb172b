"""Retention: a fixed teacher run in, student nDCG@10 / teacher nDCG@10 out (the run-file route).

This is how most users bring a large teacher: a TREC run made elsewhere. Here the "strong ranking
we can make" is the ensemble of the all-MiniLM-L6-v2 bi-encoder and BM25 (per-query z-scores, weights
fitted on the training qrels by coordinate ascent). Steps, all on training queries only:

1. the teacher ranks the top 100 candidates (BM25 top 100 + dense top 100) of each training query,
   written as a TREC run; and reranks BM25's top ``--depth`` of each held-out test query;
2. ``teacher label --source run`` turns the training run into labels (no qrels: the student sees
   the teacher alone);
3. ``student train`` with the default student settings, no qrels (the dev signal is the teacher's own
   ranking of held-out training queries);
4. the student reranks the same BM25 top ``--depth`` of the test queries.

    python -m bench retention --train-queries 200

Writes OUT/retention.{json,md}; current figures: docs/results.md, "Run-file teacher without qrels".
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, json_object, write_results
from distill.core.bm25 import BM25Index
from distill.core.evaluation import evaluate, format_markdown
from distill.core.formats import read_corpus, read_qrels, read_queries, write_queries, write_run

logger = logging.getLogger("bench.retention")
REPO = Path(__file__).resolve().parent.parent
METRICS = ("ndcg@10", "mrr@10")


class _Teacher:
    """The "given" teacher: the dense + BM25 ensemble, weights fitted on training queries the student never sees."""

    def __init__(self, corpus: dict, work: Path, fit_q: dict, fit_qrels: dict) -> None:
        from distill.teacher.candidates import DenseRetriever
        from distill.teacher.sources import BM25Source, DenseSource, EnsembleSource, fit_weights

        self.bm25 = BM25Index(corpus)
        self.dense = DenseRetriever(corpus, "default", work / "cache")
        members = {"dense": DenseSource(corpus, retriever=self.dense), "bm25": BM25Source(corpus, self.bm25)}
        fit_c = self.candidates(fit_q, 100)
        self.weights, self.alone = fit_weights({m: s.score(fit_q, fit_c) for m, s in members.items()}, fit_qrels)
        self.source = EnsembleSource(members, self.weights)

    def candidates(self, queries: dict, k: int) -> dict[str, list[str]]:
        """BM25's and the bi-encoder's top ``k`` of each query, merged."""
        b, d = self.bm25.search(queries, top_k=k), self.dense.search(queries, top_k=k)
        return {q: list(dict.fromkeys([*b.get(q, {}), *d.get(q, {})])) for q in queries}


@command(__doc__)
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/distilrank_retention"))
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--train-queries", type=int, default=200, help="seeded subset of the training queries")
@click.option("--depth", type=int, default=20, help="BM25 candidates reranked per test query")
@click.option("--max-steps", type=int, default=None, help="cap the student's steps [default: 1 epoch]")
@click.option("--student-config", callback=json_object, default=None,
              help='JSON overrides of the student config, e.g. \'{"model": {"max_seq_len": 256}}\'')
def main(data: Path, work: Path, out: Path, train_queries: int, depth: int, max_steps: int | None,
         student_config: dict) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("bm25s", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from distill.student.model import student_scorer
    from distill.student.train import StudentTrainConfig, train_student
    from distill.teacher.config import LabelConfig
    from distill.teacher.label import run_label

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    corpus_path = data / "corpus.jsonl"
    corpus = read_corpus(corpus_path)
    train_all = read_queries(data / "queries.train.tsv")
    train_qrels = read_qrels(data / "qrels.train.txt")
    test_q = read_queries(data / "queries.test.tsv")
    test_qrels = read_qrels(data / "qrels.test.txt")
    qids = sorted(train_all)
    random.Random(13).shuffle(qids)
    train_q = {q: train_all[q] for q in sorted(qids[:train_queries])}
    fit_q = {q: train_all[q] for q in sorted(qids[train_queries: train_queries + 150]) if q in train_qrels}
    train_q_path = write_queries(work / "train_queries.tsv", train_q.values())

    # teacher weights from training queries NOT used to train the student (the teacher is "given")
    teacher = _Teacher(corpus, work, fit_q, {q: train_qrels[q] for q in fit_q})
    bm25, weights = teacher.bm25, teacher.weights
    train_run = teacher.source.score(train_q, teacher.candidates(train_q, 100))
    teacher_run_path = write_run(work / "teacher.train.trec", train_run, tag="teacher", top_k=100)

    first = bm25.search(test_q, top_k=depth)
    test_cands = {q: list(first[q]) for q in test_q if first.get(q)}
    teacher_test = teacher.source.score(test_q, test_cands)

    label_cfg = LabelConfig(source="run", run=str(teacher_run_path), run_depth=100, queries=str(train_q_path),
                            corpus=str(corpus_path))
    labels = run_label(label_cfg, work / "labels", corpus=corpus)
    train_first = write_run(work / "train_bm25.trec", bm25.search(train_q, top_k=50), tag="bm25")
    overrides = dict(student_config)
    if max_steps:
        overrides["max_steps"] = max_steps
    cfg = StudentTrainConfig.from_dict(overrides)
    res = train_student(cfg, labels, corpus_path, None, work / "student", dev_run_path=train_first,
                        qrels_kind="teacher")

    student_test = student_scorer(res.model_dir).rerank(corpus, test_q, first, depth)
    metrics = {name: evaluate(test_qrels, run, METRICS).metrics for name, run in
               (("bm25", first), ("teacher (run file)", teacher_test), ("student", student_test))}
    retention = metrics["student"]["ndcg@10"] / metrics["teacher (run file)"]["ndcg@10"]
    result = {"metrics": metrics, "retention_ndcg@10": retention, "teacher_weights": weights,
              "teacher_fit_dev_ndcg10_alone": teacher.alone, "n_train_queries": len(train_q),
              "n_test_queries": len(test_qrels), "depth": depth,
              "student": {"steps": res.steps, "dev_signal": res.dev_signal, "dev_metrics": res.dev_metrics,
                          "config": cfg.to_dict()},
              "wall_time_s": round(time.perf_counter() - t0, 1)}
    md = (f"# Retention: run-file teacher -> student (SciFact, {len(train_q)} training queries, no qrels)\n\n"
          f"{len(test_qrels)} test queries, BM25 top {depth} reranked. Teacher = dense+BM25 ensemble "
          f"{weights}. Student: default settings, {res.steps} steps, dev signal: {res.dev_signal}.\n\n"
          + format_markdown(metrics) + f"\nRetention (student / teacher nDCG@10): **{retention:.3f}**\n")
    write_results(out / "retention", result, md)
    print(md)
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
