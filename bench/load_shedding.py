"""Load shedding: goodput and latency under overload, before and after admission control.

    python -m bench load_shedding [--before /tmp/before] [--duration 15]

"before" is ``distilrank serve`` run from another checkout (``git worktree add /tmp/before <commit>``), "after"
is this checkout; both serve the same model with the same flags, one after the other on 127.0.0.1 (never at
the same time: they would share the cores). For each server:

1. capacity: closed loop, ``--clients`` clients sending requests back to back without a deadline for
   ``--duration`` seconds; capacity = pairs/s answered 200;
2. open loop: Poisson arrivals at 1x, 2x and 4x the *before* server's capacity (the same offered load for
   both), each request with ``X-Request-Timeout-Ms: 1000``, for ``--duration`` seconds.

Goodput = pairs/s of the requests answered 200 within their deadline (client-measured). Also reported: p50/p99
latency of the accepted (200) requests, counts of 503/504/other, and client timeouts. Model: a random 2-layer
BERT (hidden 256, 4 heads, FFN 1024; all-MiniLM-L6-v2 tokenizer) exported to fp32 ONNX, max_seq_len 128:
its scores mean nothing, its compute is that of a small cross-encoder. The load generator (httpx, asyncio)
runs on the same machine, so it takes CPU from the server: ratios between before and after in one run are
meaningful, absolute numbers are not. Writes OUT/load_shedding.{json,md,png}; current figures: docs/results.md,
"Admission control under overload".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger(__name__)

DEADLINE_MS = 1000
CLIENT_TIMEOUT_S = 5.0
WORDS = ("cell protein gene expression mitochondria membrane receptor pathway immune response virus infection "
         "clinical trial dose patient outcome risk cohort brain neuron signal tumour growth factor enzyme binding "
         "structure sequence variant mutation therapy drug effect model data analysis").split()


def build_model(work: Path, max_seq_len: int = 128) -> Path:
    """A seeded random 2-layer BERT cross-encoder exported like ``distilrank export`` lays it out (cached)."""
    out = work / "bert2x256_onnx"
    if (out / "model_card.json").exists():
        return out
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from distill.core.base_models import resolve_student_base
    from distill.core.cross_encoder import TokenCaps
    from distill.core.model_card import ModelCard, write_model_card

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(resolve_student_base("default")))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=512, num_labels=1)
    hf = work / "bert2x256_hf"
    BertForSequenceClassification(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    ORTModelForSequenceClassification.from_pretrained(hf, export=True).save_pretrained(out)
    tok.save_pretrained(out)
    write_model_card(out, ModelCard(name="bert-2x256-random", onnx_file="model.onnx", precision="fp32",
                                    token_caps=TokenCaps(max_seq_len, max_query_tokens=None),
                                    decision="load-shedding benchmark stand-in (random weights)"))
    return out


def payloads(n: int, docs_per_request: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct request bodies: a 4-word query and documents of 60-100 words (most fill max_seq_len)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        query = f"q{i} " + " ".join(rng.choice(WORDS, 4))
        docs = [" ".join(rng.choice(WORDS, int(rng.integers(60, 100)))) for _ in range(docs_per_request)]
        out.append(json.dumps({"query": query, "documents": docs}).encode())
    return out


@dataclass
class Outcome:
    status: int  # HTTP status; -1 client timeout, -2 connection error
    seconds: float
    sent_at: float


async def _one(client, body: bytes, headers: dict[str, str], t_origin: float) -> Outcome:
    import httpx

    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/rerank", content=body, headers=headers)
        status = r.status_code
    except httpx.TimeoutException:
        status = -1
    except httpx.TransportError:
        status = -2
    return Outcome(status, time.perf_counter() - t0, t0 - t_origin)


def _client(url: str):
    import httpx

    return httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S,
                             limits=httpx.Limits(max_connections=2000, max_keepalive_connections=2000))


async def closed_loop(url: str, bodies: list[bytes], clients: int, duration: float) -> list[Outcome]:
    headers = {"Content-Type": "application/json"}
    t_origin = time.perf_counter()
    end = t_origin + duration
    out: list[Outcome] = []
    async with _client(url) as client:
        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < end:
                res = await _one(client, bodies[i % len(bodies)], headers, t_origin)
                if res.sent_at + res.seconds <= duration:
                    out.append(res)
                i += clients
        await asyncio.gather(*(worker(k) for k in range(clients)))
    return out


async def open_loop(url: str, bodies: list[bytes], rate_rps: float, duration: float, seed: int) -> list[Outcome]:
    """Poisson arrivals at ``rate_rps`` for ``duration`` seconds; waits for every request (bounded by the client
    timeout)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_rps, size=int(rate_rps * duration * 2) + 10)
    starts = np.cumsum(gaps)
    starts = starts[starts < duration]
    headers = {"Content-Type": "application/json", "X-Request-Timeout-Ms": str(DEADLINE_MS)}
    async with _client(url) as client:
        t_origin = time.perf_counter()
        tasks = []
        for i, at in enumerate(starts):
            delay = t_origin + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, bodies[i % len(bodies)], headers, t_origin)))
        return list(await asyncio.gather(*tasks))


def summarize(outcomes: list[Outcome], duration: float, docs_per_request: int, deadline_s: float | None) -> dict:
    ok = [o for o in outcomes if o.status == 200]
    good = [o for o in ok if deadline_s is None or o.seconds <= deadline_s]
    lat = np.asarray([o.seconds for o in ok]) * 1000
    count = {s: sum(o.status == s for o in outcomes) for s in (200, 503, 504)}
    return {
        "requests": len(outcomes),
        "ok": count[200], "rejected_503": count[503], "expired_504": count[504],
        "other_status": sum(o.status not in (200, 503, 504) and o.status > 0 for o in outcomes),
        "client_timeouts": sum(o.status == -1 for o in outcomes),
        "connection_errors": sum(o.status == -2 for o in outcomes),
        "late_200": len(ok) - len(good),
        "goodput_pairs_s": len(good) * docs_per_request / duration,
        "accepted_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "accepted_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "non_ok_p99_ms": float(np.percentile([o.seconds * 1000 for o in outcomes if o.status != 200], 99))
        if len(ok) < len(outcomes) else None,
    }


def run_variant(name: str, cwd: Path, model: Path, server_args: list[str], bodies: list[bytes], clients: int,
                duration: float, docs: int, rates: dict[str, float] | None) -> dict:
    """Capacity (closed loop), then the open-loop levels (``rates``: label -> req/s; None: from this capacity)."""
    from ranker.process import start_serve, stop_serve

    proc, url = start_serve(model, *server_args, quiet=True, checkout=cwd)
    try:
        asyncio.run(closed_loop(url, bodies, clients, 3.0))  # warm-up: fills the service-rate estimate and caches
        cap = summarize(asyncio.run(closed_loop(url, bodies, clients, duration)), duration, docs, None)
        capacity = cap["goodput_pairs_s"]
        logger.info("%s: capacity %.0f pairs/s (closed loop, %d clients)", name, capacity, clients)
        if rates is None:
            rates = {f"{m}x": m * capacity / docs for m in (1, 2, 4)}
        levels = {}
        for k, (label, rps) in enumerate(rates.items()):
            time.sleep(1.0)  # let the previous level's stragglers finish
            outcomes = asyncio.run(open_loop(url, bodies, rps, duration, seed=k))
            res = summarize(outcomes, duration, docs, DEADLINE_MS / 1000)
            res["offered_rps"] = rps
            res["offered_pairs_s"] = rps * docs
            levels[label] = res
            logger.info("%s %s: %s", name, label, res)
        return {"capacity_pairs_s": capacity, "capacity_run": cap, "levels": levels, "rates": rates}
    finally:
        stop_serve(proc, timeout=30)


def markdown(result: dict) -> str:
    cap = result["reference_capacity_pairs_s"]
    lines = [
        "# Load shedding: goodput under overload (before vs after admission control)", "",
        f"Model: {result['model']}. Requests: 1 query x {result['docs_per_request']} documents (60-100 words, most "
        f"truncated to max_seq_len). Deadline header {DEADLINE_MS} ms on every open-loop request. "
        f"Offered load: multiples of the before server's closed-loop capacity ({cap:.0f} pairs/s), Poisson arrivals, "
        f"{result['duration_s']:.0f} s per level. Goodput = pairs/s answered 200 within the deadline (client clock).",
        "",
        f"Capacity (closed loop, {result['clients']} clients, no deadline): before "
        f"{result['before']['capacity_pairs_s']:.0f} pairs/s, "
        f"after {result['after']['capacity_pairs_s']:.0f} pairs/s.",
        "",
        "| server | load | offered pairs/s | goodput pairs/s | goodput / own capacity | accepted p50 ms "
        "| accepted p99 ms | 200 | 503 | 504 | late 200 | client timeouts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in ("before", "after"):
        v = result[variant]
        for label, r in v["levels"].items():
            p50 = f"{r['accepted_p50_ms']:.0f}" if r["accepted_p50_ms"] is not None else "-"
            p99 = f"{r['accepted_p99_ms']:.0f}" if r["accepted_p99_ms"] is not None else "-"
            lines.append(f"| {variant} | {label} | {r['offered_pairs_s']:.0f} | {r['goodput_pairs_s']:.0f} | "
                         f"{r['goodput_pairs_s'] / v['capacity_pairs_s']:.2f} | {p50} | {p99} | {r['ok']} | "
                         f"{r['rejected_503']} | {r['expired_504']} | {r['late_200']} | {r['client_timeouts']} |")
    lines += ["", "The machine has 2 cores shared with other engineers' jobs, which may have been running during this "
              "run, and the load generator runs on the same cores as the server: compare before and after within "
              "this run, not absolute numbers across runs.", "",
              "Closed-loop capacity is conservative: each of the clients waits for its answer before sending again, "
              "so batches are less full than under open-loop overload (goodput above it at 2x is possible).", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    cap = result["reference_capacity_pairs_s"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, color in (("before", "tab:red"), ("after", "tab:blue")):
        v = result[variant]
        labels = list(v["levels"])
        x = [float(lb.rstrip("x")) for lb in labels]
        ax1.plot(x, [v["levels"][lb]["goodput_pairs_s"] for lb in labels], "o-", color=color, label=variant)
        ax2.plot(x, [v["levels"][lb]["accepted_p99_ms"] or 0 for lb in labels], "o-", color=color, label=variant)
    ax1.axhline(cap, color="grey", ls="--", lw=1, label="capacity (before)")
    ax1.axhline(0.9 * result["after"]["capacity_pairs_s"], color="tab:blue", ls=":", lw=1,
                label="90% capacity (after)")
    ax1.set(xlabel="offered load (x capacity)", ylabel="goodput (pairs/s within deadline)", title="Goodput")
    ax2.axhline(DEADLINE_MS, color="grey", ls="--", lw=1, label="deadline")
    ax2.set(xlabel="offered load (x capacity)", ylabel="p99 of accepted requests (ms)", title="Accepted p99",
            yscale="log")
    for ax in (ax1, ax2):
        ax.set_xticks([1, 2, 4])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@command(__doc__)
@click.option("--before", "before_dir", default="/tmp/before", show_default=True, type=click.Path(file_okay=False),
              help="Checkout of the code before admission control (git worktree add /tmp/before <commit>).")
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Exported model dir [default: build the random 2-layer BERT (hidden 256) in --work].")
@click.option("--work", default="/tmp/distilrank_load_shedding", show_default=True, type=click.Path(file_okay=False))
@click.option("--duration", default=15.0, show_default=True, help="Seconds per measurement.")
@click.option("--clients", default=8, show_default=True, help="Closed-loop clients for the capacity measurement.")
@click.option("--docs", default=20, show_default=True, help="Documents per request.")
@click.option("--out", "out_dir", default=str(REPO / "bench" / "results"), show_default=True)
def main(before_dir: str, model_dir: str | None, work: str, duration: float, clients: int, docs: int,
         out_dir: str) -> None:
    # before vs after: capacity, then goodput and accepted p99 at 1x/2x/4x capacity with a 1 s deadline
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    t0 = time.monotonic()
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    model = Path(model_dir) if model_dir else build_model(work_dir)
    bodies = payloads(400, docs)
    # the same flags for both; --no-spin because the machine is shared
    common = ["--threads", "2", "--no-spin", "--max-batch-pairs", "64", "--max-wait-ms", "2"]
    before = run_variant("before", Path(before_dir), model, common, bodies, clients, duration, docs, None)
    after = run_variant("after", REPO, model, common, bodies, clients, duration, docs, before["rates"])
    result = {
        "model": "random 2-layer BERT (hidden 256, 4 heads, FFN 1024), fp32 ONNX, max_seq_len 128" if not model_dir
        else str(model),
        "docs_per_request": docs, "duration_s": duration, "clients": clients, "deadline_ms": DEADLINE_MS,
        "client_timeout_s": CLIENT_TIMEOUT_S, "server_flags": common,
        "reference_capacity_pairs_s": before["capacity_pairs_s"],
        "before": before, "after": after,
        "before_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=before_dir, capture_output=True,
                                        text=True).stdout.strip(),
        "after_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip(),
        "wall_s": time.monotonic() - t0,
    }
    four = after["levels"]["4x"]
    result["target"] = {
        "goodput_at_4x_over_capacity": four["goodput_pairs_s"] / after["capacity_pairs_s"],
        "goodput_ok": four["goodput_pairs_s"] >= 0.9 * after["capacity_pairs_s"],
        "p99_ok": four["accepted_p99_ms"] is not None and four["accepted_p99_ms"] <= DEADLINE_MS,
    }
    write_results(Path(out_dir) / "load_shedding", result, markdown(result))
    plot(result, Path(out_dir) / "load_shedding.png")
    click.echo(json.dumps(result["target"]))
    click.echo(f"wrote {out_dir}/load_shedding.{{json,md,png}} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    from bench import run

    run(main)
