"""ONNX Runtime session layouts side by side: one export at several sessions x intra-op threads.

For each export (``--model``, a ``distilrank export`` dir) and each layout (``--layout SESSIONSxTHREADS``,
default one session with every core, and one single-thread session per core), the export is scored as the
ranker scores it (the card's token caps and ``max_pairs_per_call``,
:class:`distill.core.cross_encoder.CrossEncoderScorer`):

* pairs/s over BM25's top ``--depth`` of the first ``--queries-n`` test queries, one request per query;
* p50/p95 of one request of 20 passages at 1 user and 2 concurrent users;
* the largest score difference from the first layout (a pool must serve the gated scores).

The layouts take turns for ``--rounds`` rounds, so a drift of the machine's speed hits them alike; the table
gives the median of the rounds' pairs/s and the ratio of medians against the first layout.

    python -m bench session_pool --model EXPORT_DIR [--model EXPORT_DIR ...] --data .../beir-scifact

Writes OUT/PREFIX.{json,md} (default PREFIX: session_pool); current figures: docs/results.md,
"ONNX Runtime session pool".
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results
from distill.core.errors import ConfigError
from distill.core.formats import read_corpus, read_qrels, read_queries

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench.session_pool")


def _layout(text: str) -> tuple[int, int]:
    try:
        sessions, threads = (int(x) for x in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--layout {text!r}: write SESSIONSxTHREADS, e.g. 2x1") from exc
    if sessions < 1 or threads < 1:
        raise ConfigError(f"--layout {text!r}: sessions and threads must be >= 1")
    return sessions, threads


def _layouts(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[int, int]]:
    cores = os.cpu_count() or 1
    try:
        return [_layout(x) for x in (values or (f"1x{cores}", f"{cores}x1"))]
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


def _measure(model: Path, layouts: list[tuple[int, int]], requests: list[list[tuple[str, str]]],
             rounds: int) -> list[dict[str, Any]]:
    """One row per layout: pairs/s of each round (layouts take turns), latency of x20 requests, score drift."""
    from distill.core.model_card import load_model_card
    from export.latency import measure_load
    from export.scorers import onnx_scorer

    card = load_model_card(model)
    caps, per_call = card.token_caps, card.pairs_per_call or 16
    scorers = [onnx_scorer(model / card.onnx_file, model, caps, per_call, threads=t, sessions=s) for s, t in layouts]
    n_pairs = sum(len(r) for r in requests)
    x20 = [r[:20] for r in requests[:3]]
    ref: list[np.ndarray] = []
    rates: list[list[float]] = [[] for _ in layouts]
    diffs = [0.0] * len(layouts)
    for rnd in range(rounds):
        for i, scorer in enumerate(scorers):
            scorer.score_pairs(requests[0])  # warm-up
            t0 = time.perf_counter()
            scores = [scorer.score_pairs(r) for r in requests]
            rates[i].append(n_pairs / (time.perf_counter() - t0))
            if i == 0 and rnd == 0:
                ref = scores
            diffs[i] = max(diffs[i], max(float(np.abs(a - b).max()) for a, b in zip(scores, ref, strict=True)))
    rows = []
    for i, ((s, t), scorer) in enumerate(zip(layouts, scorers, strict=True)):
        row = {"model": model.name, "precision": card.precision, "layers": card.layers,
               "pairs_per_call": per_call, "sessions": s, "threads": t, "pairs_per_s_rounds": rates[i],
               "pairs_per_s": statistics.median(rates[i]),
               "ratio_vs_first": statistics.median(rates[i]) / statistics.median(rates[0]),
               "max_abs_diff_vs_first": diffs[i],
               "x20_u1": measure_load(scorer, x20, 1, 3), "x20_u2": measure_load(scorer, x20, 2, 3)}
        scorer.close()
        rows.append(row)
        logger.info("%s %dx%d: %.1f pairs/s (%.2fx), x20 u1 p95 %.0f ms, max diff %.2g", model.name, s, t,
                    row["pairs_per_s"], row["ratio_vs_first"], row["x20_u1"]["p95_ms"], diffs[i])
    return rows


def _markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# ONNX Runtime session layouts ({meta['queries']} test queries x BM25 top {meta['depth']}, "
             f"{meta['pairs']} pairs, median of {meta['rounds']} interleaved rounds, {meta['cores']} cores)\n",
             "| export | precision | layers | pairs/call | sessions×threads | pairs/s (rounds) | × vs first | "
             "x20 u1 p50/p95 ms | x20 u2 p50/p95 ms | max score diff |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        rounds = ", ".join(f"{x:.0f}" for x in r["pairs_per_s_rounds"])
        lines.append(f"| {r['model']} | {r['precision']} | {r['layers']} | {r['pairs_per_call']} | "
                     f"{r['sessions']}×{r['threads']} | {r['pairs_per_s']:.1f} ({rounds}) | "
                     f"{r['ratio_vs_first']:.2f} | "
                     f"{r['x20_u1']['p50_ms']:.0f}/{r['x20_u1']['p95_ms']:.0f} | "
                     f"{r['x20_u2']['p50_ms']:.0f}/{r['x20_u2']['p95_ms']:.0f} | {r['max_abs_diff_vs_first']:.2g} |")
    return "\n".join(lines) + "\n"


@command(__doc__)
@click.option("--model", "models", type=click.Path(path_type=Path), multiple=True, required=True,
              help="an export dir (repeatable)")
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--layout", "layouts", multiple=True, callback=_layouts,
              help="SESSIONSxTHREADS (repeatable) [default: 1xCORES and CORESx1]")
@click.option("--queries-n", type=int, default=40)
@click.option("--depth", type=int, default=20)
@click.option("--rounds", type=int, default=3)
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--prefix", default="session_pool")
def main(models: tuple[Path, ...], data: Path, layouts: list[tuple[int, int]], queries_n: int, depth: int,
         rounds: int, out: Path, prefix: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("bm25s").setLevel(logging.WARNING)

    from distill.core.bm25 import BM25Index

    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.test.tsv")
    qrels = read_qrels(data / "qrels.test.txt")
    qids = [q for q in sorted(queries) if q in qrels][:queries_n]
    first = BM25Index(corpus).search({q: queries[q] for q in qids}, top_k=depth)
    requests = [[(queries[q].text, corpus[d].full_text) for d in first[q]] for q in qids if first[q]]
    rows = [row for model in models for row in _measure(model, layouts, requests, rounds)]
    meta = {"data": str(data), "queries": len(requests), "pairs": sum(len(r) for r in requests), "depth": depth,
            "rounds": rounds, "cores": os.cpu_count() or 1}
    md = _markdown(rows, meta)
    write_results(out / prefix, {"meta": meta, "rows": rows}, md)
    print(md)
    return 0


if __name__ == "__main__":
    from bench import run

    run(main)
