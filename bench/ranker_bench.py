"""Service overhead: the HTTP ranker vs bare ONNX Runtime vs a sentence-transformers CrossEncoder.

Latency for 1 query x 20 and x 50 real SciFact passages (BM25 top-k of the scifact_mini test queries) through
the HTTP service, bare ONNX Runtime in-process and a sentence-transformers CrossEncoder (PyTorch); then the
service's throughput at 1, 2 and 4 concurrent clients.

    nice -n 10 python -m bench ranker_bench [--model EXPORTED_DIR] [--student HF_DIR] [--reps 20]

Without --model it builds a stand-in: all-MiniLM-L6-v2 + a fresh seeded 1-logit head (untrained:
the scores are meaningless, the compute is the student's), exported to fp32 ONNX. The service is
``distilrank serve`` in a subprocess on 127.0.0.1, called with ranker.client. All three run with
the same thread count. Writes OUT/ranker_bench[_TAG].{json,md,png}; current figures: docs/results.md,
"Service overhead". The machine is shared and noisy: compare ratios taken in the same run, not absolute numbers
across runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import click
import numpy as np

from bench import command, write_results
from distill.core.datasets import bundled_dataset

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger(__name__)


def stand_in_export(work: Path, max_seq_len: int) -> tuple[Path, Path]:
    """(exported ONNX dir, HF student dir) for all-MiniLM-L6-v2 with an untrained seeded 1-logit head."""
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.core.base_models import resolve_student_base
    from distill.core.cross_encoder import TokenCaps
    from distill.core.model_card import ModelCard, write_model_card

    hf, onnx_dir = work / "student_hf", work / "student_onnx"
    torch.manual_seed(0)
    base = resolve_student_base("default")
    AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1).save_pretrained(hf)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(hf)
    ORTModelForSequenceClassification.from_pretrained(hf, export=True).save_pretrained(onnx_dir)
    AutoTokenizer.from_pretrained(hf).save_pretrained(onnx_dir)
    write_model_card(onnx_dir, ModelCard(name="minilm-l6-untrained-head", onnx_file="model.onnx", precision="fp32",
                                         token_caps=TokenCaps(max_seq_len, max_query_tokens=None),
                                         decision="benchmark stand-in (untrained head)"))
    return onnx_dir, hf


def candidate_lists(k_max: int, n_queries: int) -> list[tuple[str, list[str]]]:
    from distill.core.bm25 import BM25Index
    from distill.core.formats import read_corpus, read_queries

    data = bundled_dataset().root
    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.test.tsv")
    qs = dict(list(queries.items())[:n_queries])
    run = BM25Index(corpus).search(qs, top_k=k_max)
    out = []
    for qid, hits in run.items():
        ranked = sorted(hits, key=hits.get, reverse=True)
        if len(ranked) >= k_max:
            out.append((qs[qid].text, [corpus[d].full_text for d in ranked]))
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def timed(fn, lists: list[tuple[str, list[str]]], k: int, reps: int) -> list[float]:
    fn(*lists[0][:1], lists[0][1][:k])  # warm-up for this size
    times = []
    for i in range(reps):
        q, docs = lists[i % len(lists)]
        t0 = time.perf_counter()
        fn(q, docs[:k])
        times.append(time.perf_counter() - t0)
    return times


async def throughput(url: str, lists: list[tuple[str, list[str]]], k: int, clients: int,
                     per_client: int) -> dict[str, float]:
    from ranker.client import AsyncRerankClient, RetryPolicy

    latencies: list[float] = []

    async def worker(c: int, client: AsyncRerankClient) -> None:
        for i in range(per_client):
            q, docs = lists[(c * per_client + i) % len(lists)]
            t0 = time.perf_counter()
            resp = await client.rerank(q, docs[:k])
            latencies.append(time.perf_counter() - t0)
            if len(resp.results) != k:
                raise RuntimeError("lost results")

    async with AsyncRerankClient(url, retry=RetryPolicy(retries=0), timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, client) for c in range(clients)))
        wall = time.perf_counter() - t0
    n = clients * per_client
    return {"clients": clients, "requests": n, "wall_s": wall, "req_per_s": n / wall, "pairs_per_s": n * k / wall,
            "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95)}


def plot(results: dict, path: Path | BinaryIO) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = [r["k"] for r in results["latency"]]
    width = 0.2
    for j, key in enumerate(("ort_plain", "ort_sorted", "service", "crossencoder_torch")):
        ax1.bar([i + (j - 1.5) * width for i in range(len(sizes))], [r[key]["p50_ms"] for r in results["latency"]],
                width, label=key)
    ax1.set_xticks(range(len(sizes)), [f"1 x {k}" for k in sizes])
    ax1.set_ylabel("p50 latency (ms)")
    ax1.set_title("Latency per request")
    ax1.legend(fontsize=8)
    tp = results["throughput"]
    ax2.plot([t["clients"] for t in tp], [t["req_per_s"] for t in tp], marker="o")
    ax2.set_xlabel("concurrent clients")
    ax2.set_ylabel(f"requests/s (1 x {results['throughput_k']})")
    ax2.set_title("Service throughput")
    fig.suptitle(f"{results['model']} ({results['precision']}), {results['threads']} threads; shared noisy machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def markdown(results: dict) -> str:
    lines = [f"Model `{results['model']}` ({results['precision']}, max_seq_len {results['max_seq_len']}), "
             f"{results['threads']} threads, {results['reps']} requests per cell, {results['cpu_count']} cores "
             "(shared, noisy machine: compare the ratios, not absolute ms).", "",
             "| passages | ORT plain padding p50/p95 ms | ORT sorted (runtime) p50/p95 | service HTTP p50/p95 | "
             "CrossEncoder torch p50/p95 | service overhead (p50 / ORT sorted) | speed-up vs CrossEncoder (p50) |",
             "|---|---|---|---|---|---|---|"]
    for r in results["latency"]:
        cell = [f"{r[k]['p50_ms']:.1f} / {r[k]['p95_ms']:.1f}"
                for k in ("ort_plain", "ort_sorted", "service", "crossencoder_torch")]
        lines.append(f"| 1 x {r['k']} | {' | '.join(cell)} | {r['overhead_ratio']:.2f}x | "
                     f"{r['speedup_vs_crossencoder']:.2f}x |")
    lines += ["", f"Throughput, 1 x {results['throughput_k']} passages per request:", "",
              "| clients | req/s | pairs/s | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    for t in results["throughput"]:
        lines.append(f"| {t['clients']} | {t['req_per_s']:.1f} | {t['pairs_per_s']:.0f} | {t['p50_ms']:.1f} | "
                     f"{t['p95_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def latency_rows(fns: dict[str, Callable[[str, list[str]], object]], lists: list[tuple[str, list[str]]],
                 reps: int) -> list[dict[str, object]]:
    """p50/p95/mean ms of each way to score, for 1 query x 20 and x 50 passages, and their ratios."""
    latency = []
    for k in (20, 50):
        logger.info("latency, 1 x %d passages, %d reps each", k, reps)
        cells: dict[str, dict[str, float]] = {}
        for name, fn in fns.items():
            t = timed(fn, lists, k, reps)
            cells[name] = {"p50_ms": pct(t, 50), "p95_ms": pct(t, 95), "mean_ms": statistics.fmean(t) * 1000}
        p50 = {name: cell["p50_ms"] for name, cell in cells.items()}
        latency.append({"k": k, **cells, "overhead_ratio": p50["service"] / p50["ort_sorted"],
                        "speedup_vs_crossencoder": p50["crossencoder_torch"] / p50["service"],
                        "sorting_speedup": p50["ort_plain"] / p50["ort_sorted"]})
    return latency


@command(__doc__)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="Exported dir (model_card.json).")
@click.option("--student", "student_dir", type=click.Path(file_okay=False), default=None,
              help="HF dir of the same student for the CrossEncoder baseline "
                   "(default: the card's base_models.student_dir).")
@click.option("--reps", default=20, show_default=True, type=click.IntRange(min=3))
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Threads for ORT and torch [default: all cores].")
@click.option("--max-seq-len", default=256, show_default=True, help="Only for the stand-in export.")
@click.option("--per-client", default=15, show_default=True, help="Requests per client in the throughput test.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=str(REPO / "bench" / "results"))
@click.option("--tag", default="", help="Suffix of the output files: ranker_bench_TAG.{json,md,png}.")
def main(model_dir: str | None, student_dir: str | None, reps: int, threads: int | None, max_seq_len: int,
         per_client: int, out_dir: str, tag: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import torch
    from sentence_transformers import CrossEncoder

    from distill.core.atomic_io import atomic_write
    from ranker.client import RerankClient
    from ranker.process import start_serve, stop_serve
    from ranker.runtime import RerankRuntime, RuntimeConfig

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="ranker_bench_"))
    try:
        if model_dir is None:
            model, student = stand_in_export(work, max_seq_len)
        else:
            model = Path(model_dir)
            from distill.core.model_card import load_model_card

            card = load_model_card(model)
            student = Path(student_dir or (card.base_models or {}).get("student_dir") or "")
            if not (student / "config.json").exists():
                raise click.UsageError(f"no HF student dir for the CrossEncoder baseline ({student}); pass --student")
        runtime = RerankRuntime.load(model, RuntimeConfig(threads=threads))
        runtime.warmup()
        sess, tok, L = runtime.session, runtime.tokenizer, runtime.max_seq_len

        def ort_plain(q: str, docs: list[str]) -> np.ndarray:
            enc = tok([q] * len(docs), docs, truncation="only_second", max_length=L, padding=True, return_tensors="np")
            feeds = {k: enc[k].astype(np.int64) for k in runtime.input_names if k in enc}
            return sess.run(None, feeds)[0]

        ce = CrossEncoder(str(student), max_length=L, device="cpu", num_labels=1)

        def ce_predict(q: str, docs: list[str]) -> np.ndarray:
            return ce.predict([(q, d) for d in docs], batch_size=32, show_progress_bar=False)

        lists = candidate_lists(50, n_queries=max(reps, 20))
        server, url = start_serve(model, "--threads", str(threads), "--max-docs", "200", quiet=True)
        try:
            client = RerankClient(url, timeout=60)
            latency = latency_rows({"ort_plain": ort_plain, "ort_sorted": runtime.score,
                                    "service": lambda q, d: client.rerank(q, d), "crossencoder_torch": ce_predict},
                                   lists, reps)
            client.close()
            tp = []
            for clients in (1, 2, 4):
                logger.info("throughput with %d clients", clients)
                tp.append(asyncio.run(throughput(url, lists, 20, clients, per_client)))
        finally:
            stop_serve(server)
        results = {"model": runtime.name, "precision": runtime.card.precision, "max_seq_len": L,
                   "threads": threads, "cpu_count": os.cpu_count(), "reps": reps, "latency": latency,
                   "throughput": tp, "throughput_k": 20, "model_sha256": runtime.model_sha256,
                   "note": "shared 2-core machine with other jobs running; numbers are noisy"}
        stem = Path(out_dir) / (f"ranker_bench_{tag}" if tag else "ranker_bench")
        write_results(stem, results, markdown(results))
        with atomic_write(stem.parent / f"{stem.name}.png", mode="wb") as fh:
            plot(results, fh)
        click.echo(markdown(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    from bench import run

    run(main)
