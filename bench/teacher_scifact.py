"""Teacher on SciFact at CPU scale: BM25 vs zero-shot P(yes) vs CPT+SFT teacher vs teacher+BM25.

Train split for CPT/SFT, a seeded subset of the test split for evaluation; every system reranks the
same BM25 top-k of the same queries. Writes OUT/teacher_scifact.{json,md,png}. No current figure: the LLM
teacher and where it stands on CPU are in docs/teachers.md, "The LLM teacher".

    HF_HUB_OFFLINE=1 nice -n 10 python -m bench teacher_scifact

Interpolation: per-query min-max normalised teacher and BM25 scores, ``a * teacher + (1 - a) * bm25``.
The reported system uses a = 0.5 fixed in advance (no tuning data at this budget); the sweep over a on
the test queries is also written, marked as an oracle (optimistic) number.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

import click

# set before anything can import huggingface_hub, which reads them once at import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results  # noqa: E402
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


def _train_teacher(d: Path, work: Path, cpt_pairs: int, sft_queries: int, num_negatives: int,
                   common: dict, times: dict[str, float]) -> Path:
    """CPT then SFT of the teacher on the training split; returns the teacher dir, adds wall times to ``times``."""
    from distill.teacher import CPTConfig, SFTConfig, run_cpt, run_sft

    t = time.perf_counter()
    cpt_cfg = CPTConfig(queries=str(d / "queries.train.tsv"), qrels=str(d / "qrels.train.txt"),
                        corpus=str(d / "corpus.jsonl"), max_pairs=cpt_pairs, batch_size=4, epochs=1, lr=5e-5,
                        **common)
    cpt_dir = run_cpt(cpt_cfg, work / "cpt")
    times["cpt"] = time.perf_counter() - t

    t = time.perf_counter()
    sft_cfg = SFTConfig(base_model=str(cpt_dir), queries=str(d / "queries.train.tsv"),
                        qrels=str(d / "qrels.train.txt"), corpus=str(d / "corpus.jsonl"), max_queries=sft_queries,
                        num_negatives=num_negatives, negative_depth=30, batch_size=2, epochs=1, lr=3e-5,
                        head_lr=1e-3, gen_weight=0.1, kl_weight=0.0, **common)
    teacher_dir = run_sft(sft_cfg, work / "sft")
    times["sft"] = time.perf_counter() - t
    return teacher_dir


def _markdown(report: dict, results: dict, sweep: dict[str, float], times: dict[str, float]) -> str:
    best = max(sweep, key=sweep.get)
    cpt, sft = report["cpt"], report["sft"]
    md = [f"# Teacher on SciFact ({report['eval_queries']} test queries, BM25 top-{report['rerank_depth']} reranked, "
          f"max_length {report['max_length']})",
          "", format_markdown(results),
          f"Oracle interpolation weight on these test queries: a={best} -> nDCG@10 {sweep[best]:.4f} "
          "(optimistic: tuned on test).",
          "", "| stage | wall time (s) |", "|---|---:|", *[f"| {k} | {v:.1f} |" for k, v in times.items()], "",
          f"CPT: {cpt['pairs']} pairs, {cpt['steps']} steps; SFT: {sft['queries']} queries, "
          f"{sft['examples']} examples (1+{sft['negatives']}), {sft['steps']} steps. "
          f"Device: {report['device']}, {report['torch_threads']} torch threads.", ""]
    return "\n".join(md)


@command(__doc__)
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--work", type=click.Path(path_type=Path), default=Path("/tmp/distilrank_teacher_bench"),
              help="models go here")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--cpt-pairs", type=int, default=32)
@click.option("--sft-queries", type=int, default=24)
@click.option("--num-negatives", type=int, default=3)
@click.option("--test-queries", type=int, default=30)
@click.option("--top-k", type=int, default=10)
@click.option("--max-length", type=int, default=96)
@click.option("--seed", type=int, default=13)
def main(data: Path, work: Path, out: Path, cpt_pairs: int, sft_queries: int, num_negatives: int, test_queries: int,
         top_k: int, max_length: int, seed: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import torch

    from distill.teacher import YesNoScorer, rerank_run, rerank_with

    corpus = read_corpus(data / "corpus.jsonl")
    test_q, test_qrels = read_queries(data / "queries.test.tsv"), read_qrels(data / "qrels.test.txt")
    judged = sorted(q for q in test_qrels if q in test_q)
    qids = sorted(random.Random(seed).sample(judged, min(test_queries, len(judged))))
    queries = {q: test_q[q] for q in qids}
    qrels = {q: test_qrels[q] for q in qids}
    times: dict[str, float] = {}

    t = time.perf_counter()
    bm25 = BM25Index(corpus).search(queries, top_k=top_k)
    times["bm25 (index + search)"] = time.perf_counter() - t

    common = {"max_length": max_length, "device": "auto", "checkpoint_every": 10_000, "seed": seed}
    teacher_dir = _train_teacher(data, work, cpt_pairs, sft_queries, num_negatives, common, times)

    t = time.perf_counter()
    zero = rerank_with(YesNoScorer("default", batch_size=8, max_doc_tokens=max_length - 32), corpus, queries, bm25,
                       top_k)
    times["zero-shot rerank"] = time.perf_counter() - t

    t = time.perf_counter()
    teach = rerank_run(teacher_dir, corpus, queries, bm25, top_k=top_k, batch_size=8, max_length=max_length)
    times["teacher rerank"] = time.perf_counter() - t

    systems = {"BM25": bm25, "zero-shot SmolLM2 P(yes)": zero, "CPT+SFT teacher": teach,
               "teacher + BM25 (a=0.5, fixed)": interpolate(teach, bm25, 0.5)}
    results = {name: evaluate(qrels, run, METRICS).metrics for name, run in systems.items()}
    sweep = {f"{a / 10:.1f}": evaluate(qrels, interpolate(teach, bm25, a / 10), METRICS).metrics["ndcg@10"]
             for a in range(11)}
    sft_metrics = json.loads((work / "sft" / "manifest.json").read_text())["metrics"]
    cpt_metrics = json.loads((work / "cpt" / "manifest.json").read_text())["metrics"]
    report = {
        "dataset": "BEIR SciFact", "eval_queries": len(qids), "eval_qids": qids, "rerank_depth": top_k,
        "max_length": max_length, "base": "SmolLM2-135M-Instruct (fp32, CPU)",
        "cpt": {"pairs": cpt_metrics["pairs"], "steps": cpt_metrics["steps"], "final_loss": cpt_metrics["final_loss"]},
        "sft": {"queries": sft_metrics["queries"], "examples": sft_metrics["examples"], "steps": sft_metrics["steps"],
                "negatives": num_negatives, "final_loss": sft_metrics["final_loss"]},
        "metrics": results, "interpolation_sweep_ndcg@10_oracle_on_test": sweep,
        "wall_time_s": {k: round(v, 1) for k, v in times.items()},
        "torch_threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    md = _markdown(report, results, sweep, times)
    write_results(out / "teacher_scifact", report, md)
    plot_metrics(results, out / "teacher_scifact.png", title="Teacher on SciFact (CPU scale)")
    print(md)
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
