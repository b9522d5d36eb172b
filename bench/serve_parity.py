"""Served scores vs the export gates' scores for the same pairs, and the cold start to /ready.

The export is served with ``distilrank serve`` on 127.0.0.1; the bench times the cold start to ``/ready`` and
checks that the HTTP scores equal the export gates' scores for the same pairs (exit 1 when they differ).

The reference is the exporter's own scorer over the card's ONNX file, token caps and ``max_pairs_per_call`` (one
pair per ONNX call for dynamic int8), so a ranker that batched such a model differently would show up here.

    python -m bench serve_parity --model EXPORT_DIR --queries Q.tsv --run RUN.trec --corpus C.jsonl [--queries-n 5]

Writes OUT/serve_parity.{json,md}; current figures: docs/results.md, "Served scores and cold start".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results
from distill.core.errors import MissingPrerequisiteError
from distill.core.formats import read_corpus, read_queries, read_run

REPO = Path(__file__).resolve().parent.parent


@command(__doc__)
@click.option("--model", type=click.Path(path_type=Path), required=True,
              help="an export dir (distilrank export --out)")
@click.option("--queries", type=click.Path(path_type=Path), required=True)
@click.option("--run", "run_path", type=click.Path(path_type=Path), required=True,
              help="first-stage run: each query's candidates are the request")
@click.option("--corpus", type=click.Path(path_type=Path), required=True)
@click.option("--queries-n", type=int, default=5, help="requests (one per query, its top --depth candidates)")
@click.option("--depth", type=int, default=20)
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
def main(model: Path, queries: Path, run_path: Path, corpus: Path, queries_n: int, depth: int, out: Path) -> int:
    from distill.core.model_card import load_model_card
    from export.scorers import onnx_scorer
    from ranker.client import RerankClient
    from ranker.process import start_serve, stop_serve

    card = load_model_card(model)
    docs_by_id, texts, run = read_corpus(corpus), read_queries(queries), read_run(run_path)
    qids = [q for q in sorted(run) if q in texts][:queries_n]
    if not qids:
        raise MissingPrerequisiteError(f"no query of {run_path} is in {queries}")
    requests = {q: [docs_by_id[d].full_text for d in sorted(run[q], key=lambda d: -run[q][d])[:depth]] for q in qids}

    t0 = time.perf_counter()
    proc, url = start_serve(model, "--scores", "raw", quiet=True)
    cold_start_s = time.perf_counter() - t0
    served: dict[str, np.ndarray] = {}
    try:
        with RerankClient(url, timeout=120.0) as client:
            for q, docs in requests.items():
                by_index = {r.index: r.relevance_score for r in client.rerank(texts[q].text, docs).results}
                served[q] = np.array([by_index[i] for i in range(len(docs))], dtype=np.float32)
    finally:
        stop_serve(proc)

    per_call = card.pairs_per_call or 16
    gated = onnx_scorer(model / card.onnx_file, model, card.token_caps, per_call)
    diffs = [float(np.abs(served[q] - gated.score_pairs([(texts[q].text, d) for d in docs])).max())
             for q, docs in requests.items()]
    result = {"model": str(model), "precision": card.precision, "layers": card.layers,
              "max_pairs_per_call": card.pairs_per_call, "requests": len(requests),
              "pairs": sum(len(d) for d in requests.values()), "cold_start_to_ready_s": round(cold_start_s, 2),
              "max_abs_diff_served_vs_gated": max(diffs)}
    md = ("# Served scores vs the export gates' scorer\n\n| key | value |\n|---|---|\n"
          + "".join(f"| {k} | {v} |\n" for k, v in result.items()))
    write_results(out / "serve_parity", result, md)
    print(md)
    return 0 if max(diffs) <= 1e-5 else 1


if __name__ == "__main__":
    from bench import run

    run(main)
