"""Student vs teacher cost per (query, document) pair on this machine, measured side by side.

    nice -n 10 python -m bench student_cost --teacher runs/demo/teacher_sft/teacher \\
        --student runs/demo/student/model --out bench/results/student_cost

Both score the same pairs (SciFact-mini test queries x their BM25 top documents) at the same
max length, batch size and thread count; repetitions alternate teacher/student so machine noise hits
both. Also reports an analytic FLOPs estimate: 2 x (non-embedding parameters) x tokens per pair
(attention's quadratic term is small at these lengths and is left out, for both models alike).
Writes OUT.json, OUT.md and OUT.png; current figures: docs/results.md, "Teacher and student cost per pair".
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import click

from bench import command, write_results
from distill.core.atomic_io import atomic_write
from distill.core.datasets import bundled_dataset

logger = logging.getLogger(__name__)

DEMO = bundled_dataset().root


def _non_embedding_params(model) -> int:  # noqa: ANN001
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n)


def _markdown(result: dict) -> str:
    ms, params = result["ms_per_pair_median"], result["non_embedding_params"]
    return ("| model | ms/pair (median) | non-emb. params | tokens/pair | GFLOPs/pair |\n|---|---:|---:|---:|---:|\n"
            + "".join(f"| {k} | {ms[k]:.2f} | {params[k] / 1e6:.1f} M | {result['mean_tokens_per_pair'][k]:.0f} | "
                      f"{result['gflops_per_pair'][k]:.2f} |\n" for k in ("teacher", "student"))
            + f"\nteacher/student: {result['teacher_over_student_time']:.1f}x time, "
              f"{result['teacher_over_student_flops']:.1f}x FLOPs ({result['pairs']} pairs, max_length "
              f"{result['max_length']}, batch {result['batch_size']}, {result['threads']} threads, "
              f"median of {result['repeats']})\n")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = result["ms_per_pair_median"]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    bars = ax.bar(["teacher", "student"], [ms["teacher"], ms["student"]], color=["tab:orange", "tab:blue"])
    ax.bar_label(bars, fmt="%.1f ms")
    ax.set_ylabel("ms per pair (CPU)")
    ax.set_title(f"cost per pair: teacher/student = {result['teacher_over_student_time']:.1f}x")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)


@command(__doc__)
@click.option("--teacher", required=True)
@click.option("--student", required=True)
@click.option("--pairs", type=int, default=96)
@click.option("--max-length", type=int, default=128)
@click.option("--batch-size", type=int, default=16)
@click.option("--repeats", type=int, default=3)
@click.option("--threads", type=int, default=2)
@click.option("--out", default="bench/results/student_cost")
def main(teacher: str, student: str, pairs: int, max_length: int, batch_size: int, repeats: int, threads: int,
         out: str) -> None:
    import torch

    from distill.core.bm25 import BM25Index
    from distill.core.cross_encoder import TokenCaps
    from distill.core.formats import read_corpus, read_queries
    from distill.student.model import load_student, student_scorer
    from distill.teacher import TeacherScorer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)

    corpus = read_corpus(DEMO / "corpus.jsonl")
    queries = read_queries(DEMO / "queries.test.tsv")
    run = BM25Index(corpus).search(queries, top_k=10)
    scored = [(queries[q].text, corpus[d].full_text) for q in run for d in run[q]][:pairs]

    student_model, s_tok = load_student(student)
    teacher_model = TeacherScorer(teacher, batch_size=batch_size, max_length=max_length, device="cpu",
                                  precision="fp32")
    scorer = student_scorer(student_model, s_tok, TokenCaps(max_seq_len=max_length), batch_size)
    fns = {"student": lambda: scorer.score_pairs(scored),
           "teacher": lambda: teacher_model.score(scored)}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000 / len(scored))
    ms = {k: statistics.median(v) for k, v in times.items()}

    s_tokens = statistics.mean(len(s_tok(q, d, truncation=True, max_length=max_length)["input_ids"])
                               for q, d in scored)
    t_tok = teacher_model.tokenizer
    t_tokens = statistics.mean(min(max_length, len(t_tok(f"query: {q} document: {d}")["input_ids"]) + 1)
                               for q, d in scored)
    params = {"student": _non_embedding_params(student_model), "teacher": _non_embedding_params(teacher_model.ranker)}
    flops = {"student": 2 * params["student"] * s_tokens, "teacher": 2 * params["teacher"] * t_tokens}
    result = {
        "pairs": len(scored), "max_length": max_length, "batch_size": batch_size, "threads": threads,
        "repeats": repeats, "ms_per_pair_median": ms, "ms_per_pair_all": times,
        "teacher_over_student_time": ms["teacher"] / ms["student"],
        "mean_tokens_per_pair": {"student": s_tokens, "teacher": t_tokens},
        "non_embedding_params": params, "gflops_per_pair": {k: v / 1e9 for k, v in flops.items()},
        "teacher_over_student_flops": flops["teacher"] / flops["student"],
        "student_dir": student, "teacher_dir": teacher,
    }
    out_path = Path(out)
    md = _markdown(result)
    write_results(out_path.with_suffix(""), result, md)
    _plot(result, out_path.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    from bench import run

    run(main)
