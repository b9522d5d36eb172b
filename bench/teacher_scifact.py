"""Teacher on SciFact at CPU scale: BM25 vs zero-shot P(yes) vs CPT+SFT teacher vs teacher+BM25.

Train split for CPT/SFT, a seeded subset of the test split for evaluation; every system reranks the
same BM25 top-k of the same queries. Writes bench/results/teacher_scifact.{json,md,png}.

    HF_HUB_OFFLINE=1 nice -n 10 python -m bench.teacher_scifact

Interpolation: per-query min-max normalised teacher and BM25 scores, ``a * teacher + (1 - a) * bm25``.
The reported system uses a = 0.5 fixed in advance (no tuning data at this budget); the sweep over a on
the test queries is also written, marked as an oracle (optimistic) number.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

# set before anything can import huggingface_hub, which reads them once at import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distill.core.atomic_io import atomic_write, write_json  # noqa: E402
from distill.core.bm25 import BM25Index  # noqa: E402
from distill.core.evaluation import evaluate, format_markdown, plot_metrics  # noqa: E402
from distill.core.formats import Run, read_corpus, read_qrels, read_queries  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

logger = logging.getLogger("bench.teacher_scifact")
METRICS = ("ndcg@10", "mrr@10")


def minmax(scores: dict[str, float]) -> dict[str, float]:
    lo, hi = min(scores.values()), max(scores.values())
    return {d: (s - lo) / (hi - lo) if hi > lo else 0.0 for d, s in scores.items()}


def interpolate(teacher: Run, bm25: Run, alpha: float) -> Run:
    out: Run = {}
    for qid, docs in teacher.items():
        t, b = minmax(docs), minmax({d: bm25[qid][d] for d in docs})
        out[qid] = {d: alpha * t[d] + (1 - alpha) * b[d] for d in docs}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "beir-scifact")
    ap.add_argument("--work", type=Path, default=Path("/tmp/distilrank_teacher_bench"), help="models go here")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--cpt-pairs", type=int, default=32)
    ap.add_argument("--sft-queries", type=int, default=24)
    ap.add_argument("--num-negatives", type=int, default=3)
    ap.add_argument("--test-queries", type=int, default=30)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    from distill.teacher import CPTConfig, SFTConfig, YesNoScorer, rerank_run, rerank_with, run_cpt, run_sft

    d = args.data
    corpus = read_corpus(d / "corpus.jsonl")
    test_q, test_qrels = read_queries(d / "queries.test.tsv"), read_qrels(d / "qrels.test.txt")
    judged = sorted(q for q in test_qrels if q in test_q)
    qids = sorted(random.Random(args.seed).sample(judged, min(args.test_queries, len(judged))))
    queries = {q: test_q[q] for q in qids}
    qrels = {q: test_qrels[q] for q in qids}
    times: dict[str, float] = {}

    t = time.perf_counter()
    bm25 = BM25Index(corpus).search(queries, top_k=args.top_k)
    times["bm25 (index + search)"] = time.perf_counter() - t

    common = {"max_length": args.max_length, "device": "auto", "checkpoint_every": 10_000, "seed": args.seed}
    t = time.perf_counter()
    cpt_cfg = CPTConfig(queries=str(d / "queries.train.tsv"), qrels=str(d / "qrels.train.txt"),
                        corpus=str(d / "corpus.jsonl"), max_pairs=args.cpt_pairs, batch_size=4, epochs=1, lr=5e-5,
                        **common)
    cpt_dir = run_cpt(cpt_cfg, args.work / "cpt")
    times["cpt"] = time.perf_counter() - t

    t = time.perf_counter()
    sft_cfg = SFTConfig(base_model=str(cpt_dir), queries=str(d / "queries.train.tsv"), qrels=str(d / "qrels.train.txt"),
                        corpus=str(d / "corpus.jsonl"), max_queries=args.sft_queries, num_negatives=args.num_negatives,
                        negative_depth=30, batch_size=2, epochs=1, lr=3e-5, head_lr=1e-3, gen_weight=0.1, kl_weight=0.0,
                        **common)
    teacher_dir = run_sft(sft_cfg, args.work / "sft")
    times["sft"] = time.perf_counter() - t

    t = time.perf_counter()
    zero = rerank_with(YesNoScorer("default", batch_size=8, max_doc_tokens=args.max_length - 32), corpus, queries, bm25,
                       args.top_k)
    times["zero-shot rerank"] = time.perf_counter() - t

    t = time.perf_counter()
    teach = rerank_run(teacher_dir, corpus, queries, bm25, top_k=args.top_k, batch_size=8, max_length=args.max_length)
    times["teacher rerank"] = time.perf_counter() - t

    systems = {"BM25": bm25, "zero-shot SmolLM2 P(yes)": zero, "CPT+SFT teacher": teach,
               "teacher + BM25 (a=0.5, fixed)": interpolate(teach, bm25, 0.5)}
    results = {name: evaluate(qrels, run, METRICS).metrics for name, run in systems.items()}
    sweep = {f"{a / 10:.1f}": evaluate(qrels, interpolate(teach, bm25, a / 10), METRICS).metrics["ndcg@10"]
             for a in range(11)}
    sft_manifest = json.loads((args.work / "sft" / "manifest.json").read_text())
    cpt_manifest = json.loads((args.work / "cpt" / "manifest.json").read_text())
    report = {
        "dataset": "BEIR SciFact", "eval_queries": len(qids), "eval_qids": qids, "rerank_depth": args.top_k,
        "max_length": args.max_length, "base": "SmolLM2-135M-Instruct (fp32, CPU)",
        "cpt": {"pairs": cpt_manifest["metrics"]["pairs"], "steps": cpt_manifest["metrics"]["steps"],
                "final_loss": cpt_manifest["metrics"]["final_loss"]},
        "sft": {"queries": sft_manifest["metrics"]["queries"], "examples": sft_manifest["metrics"]["examples"],
                "steps": sft_manifest["metrics"]["steps"], "negatives": args.num_negatives,
                "final_loss": sft_manifest["metrics"]["final_loss"]},
        "metrics": results, "interpolation_sweep_ndcg@10_oracle_on_test": sweep,
        "wall_time_s": {k: round(v, 1) for k, v in times.items()},
        "torch_threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "command": "HF_HUB_OFFLINE=1 nice -n 10 python -m bench.teacher_scifact " + " ".join(sys.argv[1:]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "teacher_scifact.json", report)
    best = max(sweep, key=sweep.get)
    md = [f"# Teacher on SciFact ({len(qids)} test queries, BM25 top-{args.top_k} reranked, max_length {args.max_length})",
          "", format_markdown(results),
          f"Oracle interpolation weight on these test queries: a={best} -> nDCG@10 {sweep[best]:.4f} (optimistic: tuned on test).",
          "", "| stage | wall time (s) |", "|---|---:|", *[f"| {k} | {v:.1f} |" for k, v in times.items()], "",
          f"CPT: {report['cpt']['pairs']} pairs, {report['cpt']['steps']} steps; SFT: {report['sft']['queries']} queries, "
          f"{report['sft']['examples']} examples (1+{args.num_negatives}), {report['sft']['steps']} steps. "
          f"Device: {report['device']}, {report['torch_threads']} torch threads.", "",
          f"Command: `{report['command']}`", ""]
    with atomic_write(args.out / "teacher_scifact.md") as fh:
        fh.write("\n".join(md))
    plot_metrics(results, args.out / "teacher_scifact.png", title="Teacher on SciFact (CPU scale)")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
