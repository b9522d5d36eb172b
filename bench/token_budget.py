"""Token budget: dev nDCG@10 and scoring cost of a trained student under different token caps.

The caps are chosen on DEV queries (never the test set): the cheapest budget whose dev nDCG@10 is within
``--tolerance`` points of the best one. The result is what to pass to ``distilrank export
--max-seq-len/--max-query-tokens/--max-doc-tokens`` so that the model card, the gates and the ranker all
truncate that way.

    python -m bench token_budget --model runs/small-scifact/student/model \\
        --queries Q --qrels QRELS --run FIRST_STAGE_RUN --corpus C [--max-queries 80]

Writes OUT/token_budget.{json,md}; current figures: docs/results.md, "Token caps: the dev choice and the test".
Latency: 1 query x 20 passages through the shared scorer (torch backend, 2 threads), p50 over ``--reps``;
compare rows of one run only.
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
from distill.core.cross_encoder import CrossEncoderScorer, PairEncoder, TokenCaps, TorchBackend
from distill.core.errors import DataError
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries, read_run

REPO = Path(__file__).resolve().parent.parent
GRID = [(32, 96), (32, 128), (32, 160), (32, 224), (64, 448)]


def _markdown(result: dict, reps: int) -> str:
    rows, chosen = result["rows"], result["chosen"]
    md = ["# Token budget on dev queries", "", f"{result['n_dev_queries']} dev queries, first-stage top "
          f"{result['top_k']} reranked by `{result['model']}`; latency: 1 query x 20 passages, torch backend, "
          f"p50 of {reps}.", "",
          "| query cap | doc cap | max_seq_len | dev nDCG@10 | x20 p50 ms |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['max_query_tokens']} | {r['max_doc_tokens']} | {r['max_seq_len']} | {r['dev_ndcg@10']:.4f} | "
           f"{r['p50_ms_x20']:.0f} |" for r in rows]
    md += ["", f"Chosen (cheapest within {result['tolerance_points']} points of the best dev nDCG@10): query "
           f"{chosen['max_query_tokens']}, document {chosen['max_doc_tokens']} tokens (`--max-seq-len "
           f"{chosen['max_seq_len']} --max-query-tokens {chosen['max_query_tokens']} --max-doc-tokens "
           f"{chosen['max_doc_tokens']}`)."]
    return "\n".join(md) + "\n"


@command(__doc__)
@click.option("--model", type=click.Path(path_type=Path), required=True)
@click.option("--queries", type=click.Path(path_type=Path), required=True)
@click.option("--qrels", type=click.Path(path_type=Path), required=True)
@click.option("--run", "run_path", type=click.Path(path_type=Path), required=True,
              help="first-stage run of the dev queries")
@click.option("--corpus", type=click.Path(path_type=Path), required=True)
@click.option("--max-queries", type=int, default=80)
@click.option("--top-k", type=int, default=20)
@click.option("--reps", type=int, default=5)
@click.option("--tolerance", type=float, default=0.5, help="nDCG@10 points below the best still accepted")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
def main(model: Path, queries: Path, qrels: Path, run_path: Path, corpus: Path, max_queries: int, top_k: int,
         reps: int, tolerance: float, out: Path) -> int:
    import torch

    torch.set_num_threads(2)
    docs = read_corpus(corpus)
    judgements = read_qrels(qrels)
    texts = read_queries(queries)
    first_stage = read_run(run_path)
    # the dev queries are those of the run (a queries file may hold a whole split)
    qids = [q for q in sorted(texts) if q in judgements and q in first_stage][:max_queries]
    if not qids:
        raise DataError(f"no query of this run is in both {queries} and {qrels}", path=run_path)
    texts = {q: texts[q] for q in qids}
    run = {q: first_stage[q] for q in qids}
    backend = TorchBackend.load(model)
    lat_q = qids[0]
    lat_docs = [docs[d].full_text for d, _ in sorted(run[lat_q].items(), key=lambda kv: -kv[1])[:20]]
    rows = []
    for q_cap, d_cap in GRID:
        caps = TokenCaps(max_seq_len=q_cap + d_cap + 3, max_query_tokens=q_cap, max_doc_tokens=d_cap)
        scorer = CrossEncoderScorer(PairEncoder(model, caps), backend, pairs_per_call=20)
        reranked = scorer.rerank(docs, texts, run, top_k)
        ndcg = evaluate({q: judgements[q] for q in qids}, reranked, ["ndcg@10"]).metrics["ndcg@10"]
        times = []
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            scorer.score([texts[lat_q].text] * len(lat_docs), lat_docs)
            times.append(1000 * (time.perf_counter() - t0))
        rows.append({"max_query_tokens": q_cap, "max_doc_tokens": d_cap, "max_seq_len": caps.max_seq_len,
                     "dev_ndcg@10": ndcg, "p50_ms_x20": float(np.median(times[1:]))})
        print(rows[-1], flush=True)
    best = max(r["dev_ndcg@10"] for r in rows)
    ok = [r for r in rows if r["dev_ndcg@10"] >= best - tolerance / 100]
    chosen = min(ok, key=lambda r: r["p50_ms_x20"])
    result = {"rows": rows, "chosen": chosen, "tolerance_points": tolerance, "n_dev_queries": len(qids),
              "model": str(model), "top_k": top_k}
    md = _markdown(result, reps)
    write_results(out / "token_budget", result, md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
