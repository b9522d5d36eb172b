"""Dense teacher member: does fine-tuning it on training qrels make a stronger teacher? (dev only).

The SciFact training queries are split (seeded): ``--dev`` held out, the rest train the bi-encoder with
``distill.teacher.dense_ft.fine_tune_dense`` (the pipeline's ``dense_ft`` stage). On the held-out queries,
BM25's top 20 are reranked by BM25, the base and the tuned bi-encoder, and z-score fusions of BM25 with
each at dense weights 0.3-0.7. No test query is touched.

    python -m bench dense_ft

Writes OUT/dense_ft.{json,md}; the finding is in docs/results.md, "Stronger CPU teachers (dev only, not adopted)".
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

from bench import command, write_results
from distill.core.bm25 import BM25Index
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries

REPO = Path(__file__).resolve().parent.parent


@command(__doc__)
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/distilrank_dense_ft"))
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--dev", type=int, default=150, help="held-out training queries to measure on")
@click.option("--epochs", type=int, default=1)
@click.option("--lr", type=float, default=2e-5)
def main(data: Path, work: Path, out: Path, dev: int, epochs: int, lr: float) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")

    from distill.teacher.candidates import DenseRetriever
    from distill.teacher.dense_ft import DenseFineTuneConfig, fine_tune_dense
    from distill.teacher.sources import combine_runs

    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.train.tsv")
    qrels = read_qrels(data / "qrels.train.txt")
    qids = sorted(q for q in queries if q in qrels)
    random.Random(13).shuffle(qids)
    dev_qids = sorted(qids[:dev])
    dev_q, dev_qrels = {q: queries[q] for q in dev_qids}, {q: qrels[q] for q in dev_qids}
    bm25 = BM25Index(corpus)
    first = bm25.search(dev_q, top_k=20)
    cands = {q: list(first[q]) for q in dev_qids}

    t0 = time.perf_counter()
    cfg = DenseFineTuneConfig(epochs=epochs, learning_rate=lr)
    tuned_dir = fine_tune_dense(cfg, queries, qrels, corpus, work / "ft", exclude=dev_qids, bm25=bm25)
    train_s = time.perf_counter() - t0
    runs = {"bm25": first,
            "dense": DenseRetriever(corpus, "default", work / "cache").score_docs(dev_q, cands),
            "dense_ft": DenseRetriever(corpus, str(tuned_dir), work / "cache").score_docs(dev_q, cands)}

    def ndcg(run: dict) -> float:
        return evaluate(dev_qrels, run, ["ndcg@10"]).metrics["ndcg@10"]

    alone = {k: ndcg(r) for k, r in runs.items()}
    fused = {m: {str(w): ndcg(combine_runs({m: runs[m], "bm25": first}, {m: w, "bm25": 1 - w}))
                 for w in (0.3, 0.4, 0.5, 0.6, 0.7)} for m in ("dense", "dense_ft")}
    result = {"dev_queries": len(dev_qids), "alone": alone, "fused_with_bm25": fused, "config": cfg.to_dict(),
              "fine_tune_wall_s": round(train_s, 1)}
    md = (f"# Dense teacher member: base vs fine-tuned on training qrels ({len(dev_qids)} held-out SciFact "
          "training queries)\n\n| dev nDCG@10 | base | fine-tuned |\n|---|---:|---:|\n"
          f"| alone | {alone['dense']:.4f} | {alone['dense_ft']:.4f} |\n"
          + "".join(f"| fused with BM25, dense weight {w} | {fused['dense'][w]:.4f} | {fused['dense_ft'][w]:.4f} |\n"
                    for w in fused["dense"])
          + f"\nBM25 alone {alone['bm25']:.4f}. Fine-tuning took {train_s:.0f} s.\n")
    write_results(out / "dense_ft", result, md)
    print(md)
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
