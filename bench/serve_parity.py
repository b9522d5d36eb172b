"""Serve an export with ``distilrank serve`` on 127.0.0.1; time the cold start to ``/ready`` and check that the
HTTP scores equal the export gates' scores for the same pairs.

The reference is the exporter's own scorer over the card's ONNX file, token caps and ``max_pairs_per_call`` (one
pair per ONNX call for dynamic int8), so a ranker that batched such a model differently would show up here.

    python -m bench.serve_parity --model EXPORT_DIR --queries Q.tsv --run RUN.trec --corpus C.jsonl [--queries-n 5]

Writes bench/results/serve_parity.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distill.core.atomic_io import atomic_write, write_json
from distill.core.errors import MissingPrerequisiteError
from distill.core.formats import read_corpus, read_queries, read_run

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="an export dir (distilrank export --out)")
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="first-stage run: each query's candidates are the request")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--queries-n", type=int, default=5, help="requests (one per query, its top --depth candidates)")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()

    from distill.core.model_card import load_model_card
    from export.scorers import onnx_scorer
    from ranker.client import RerankClient
    from ranker.process import start_serve, stop_serve

    card = load_model_card(args.model)
    corpus, queries, run = read_corpus(args.corpus), read_queries(args.queries), read_run(args.run)
    qids = [q for q in sorted(run) if q in queries][: args.queries_n]
    if not qids:
        raise MissingPrerequisiteError(f"no query of {args.run} is in {args.queries}")
    requests = {q: [corpus[d].full_text for d in sorted(run[q], key=lambda d: -run[q][d])[: args.depth]] for q in qids}

    t0 = time.perf_counter()
    proc, url = start_serve(args.model, "--scores", "raw", quiet=True)
    cold_start_s = time.perf_counter() - t0
    served: dict[str, np.ndarray] = {}
    try:
        with RerankClient(url, timeout=120.0) as client:
            for q, docs in requests.items():
                by_index = {r.index: r.relevance_score for r in client.rerank(queries[q].text, docs).results}
                served[q] = np.array([by_index[i] for i in range(len(docs))], dtype=np.float32)
    finally:
        stop_serve(proc)

    per_call = card.pairs_per_call or 16
    gated = onnx_scorer(args.model / card.onnx_file, args.model, card.token_caps, per_call)
    diffs = [float(np.abs(served[q] - gated.score_pairs([(queries[q].text, d) for d in docs])).max())
             for q, docs in requests.items()]
    result = {"model": str(args.model), "precision": card.precision, "layers": card.layers,
              "max_pairs_per_call": card.pairs_per_call, "requests": len(requests),
              "pairs": sum(len(d) for d in requests.values()), "cold_start_to_ready_s": round(cold_start_s, 2),
              "max_abs_diff_served_vs_gated": max(diffs)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serve_parity.json", result)
    md = ("# Served scores vs the export gates' scorer\n\n| key | value |\n|---|---|\n"
          + "".join(f"| {k} | {v} |\n" for k, v in result.items()))
    with atomic_write(args.out / "serve_parity.md") as fh:
        fh.write(md)
    print(md)
    return 0 if max(diffs) <= 1e-5 else 1


if __name__ == "__main__":
    from bench import run

    run(main)
