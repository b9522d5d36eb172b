"""Token budget: dev nDCG@10 and scoring cost of a trained student under different (query, document) caps.

The caps are chosen on DEV queries (never the test set): the cheapest budget whose dev nDCG@10 is within
``--tolerance`` points of the best one. The result is what to pass to ``distilrank export
--max-seq-len/--max-query-tokens/--max-doc-tokens`` so that the model card, the gates and the ranker all
truncate that way.

    python -m bench.token_budget --model runs/small-scifact/student/model \
        --queries Q --qrels QRELS --run FIRST_STAGE_RUN --corpus C [--max-queries 80]

Writes bench/results/token_budget.{json,md}. Latency: 1 query x 20 passages through the shared scorer
(torch backend, 2 threads), p50 over ``--reps``; compare rows of one run only.
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
from distill.core.cross_encoder import CrossEncoderScorer, PairEncoder, TokenCaps, TorchBackend
from distill.core.errors import DataError
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries, read_run

REPO = Path(__file__).resolve().parent.parent
GRID = [(32, 96), (32, 128), (32, 160), (32, 224), (64, 448)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--qrels", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True, help="first-stage run of the dev queries")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--max-queries", type=int, default=80)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.5, help="nDCG@10 points below the best still accepted")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    corpus = read_corpus(args.corpus)
    qrels = read_qrels(args.qrels)
    queries = read_queries(args.queries)
    first_stage = read_run(args.run)
    # the dev queries are those of the run (a queries file may hold a whole split)
    qids = [q for q in sorted(queries) if q in qrels and q in first_stage][: args.max_queries]
    if not qids:
        raise DataError(f"no query of this run is in both {args.queries} and {args.qrels}", path=args.run)
    queries = {q: queries[q] for q in qids}
    run = {q: first_stage[q] for q in qids}
    backend = TorchBackend.load(args.model)
    lat_q = qids[0]
    lat_docs = [corpus[d].full_text for d, _ in sorted(run[lat_q].items(), key=lambda kv: -kv[1])[:20]]
    rows = []
    for q_cap, d_cap in GRID:
        caps = TokenCaps(max_seq_len=q_cap + d_cap + 3, max_query_tokens=q_cap, max_doc_tokens=d_cap)
        scorer = CrossEncoderScorer(PairEncoder(args.model, caps), backend, batch_size=20)
        reranked = scorer.rerank(corpus, queries, run, args.top_k)
        ndcg = evaluate({q: qrels[q] for q in qids}, reranked, ["ndcg@10"]).metrics["ndcg@10"]
        times = []
        for _ in range(args.reps + 1):
            t0 = time.perf_counter()
            scorer.score([queries[lat_q].text] * len(lat_docs), lat_docs)
            times.append(1000 * (time.perf_counter() - t0))
        rows.append({"max_query_tokens": q_cap, "max_doc_tokens": d_cap, "max_seq_len": caps.max_seq_len,
                     "dev_ndcg@10": ndcg, "p50_ms_x20": float(np.median(times[1:]))})
        print(rows[-1], flush=True)
    best = max(r["dev_ndcg@10"] for r in rows)
    ok = [r for r in rows if r["dev_ndcg@10"] >= best - args.tolerance / 100]
    chosen = min(ok, key=lambda r: r["p50_ms_x20"])
    result = {"rows": rows, "chosen": chosen, "tolerance_points": args.tolerance, "n_dev_queries": len(qids),
              "model": str(args.model), "top_k": args.top_k}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "token_budget.json", result)
    md = ["# Token budget on dev queries", "", f"{len(qids)} dev queries, first-stage top {args.top_k} reranked by "
          f"`{args.model}`; latency: 1 query x 20 passages, torch backend, p50 of {args.reps}.", "",
          "| query cap | doc cap | max_seq_len | dev nDCG@10 | x20 p50 ms |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['max_query_tokens']} | {r['max_doc_tokens']} | {r['max_seq_len']} | {r['dev_ndcg@10']:.4f} | "
           f"{r['p50_ms_x20']:.0f} |" for r in rows]
    md += ["", f"Chosen (cheapest within {args.tolerance} points of the best dev nDCG@10): query {chosen['max_query_tokens']}, "
           f"document {chosen['max_doc_tokens']} tokens (`--max-seq-len {chosen['max_seq_len']} --max-query-tokens "
           f"{chosen['max_query_tokens']} --max-doc-tokens {chosen['max_doc_tokens']}`)."]
    with atomic_write(args.out / "token_budget.md") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
