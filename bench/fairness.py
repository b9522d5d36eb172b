"""Fair scheduling: p95 of small requests beside a 1000 x 20,000-character request, against alone.

p95 of 3-document requests while one request of 1000 documents x 20,000 characters is being scored. One
``distilrank serve`` (this checkout, or ``--checkout`` another one, e.g. a ``git worktree`` of an older commit)
serves the model; ``--clients`` closed-loop clients send 3-document requests (short texts) back to back:

* alone: for ``--duration`` seconds, nothing else running;
* beside a large request: one request of ``--big-docs`` documents x ``--big-chars`` characters is sent, and the
  3-document requests sent while it is in flight are measured (to their answer, however late).

The two phases take turns for ``--rounds`` rounds. Reported: p50/p95 of the small requests in each phase, the
ratio of the p95s (target: at most 2), and the large request's own latency (what fairness costs it). Model: the
bench stand-in of ``bench.load_shedding`` (a random 2-layer BERT, hidden 256, fp32 ONNX, max_seq_len 128) unless
``--model`` names an export. The clients run on the same machine as the server, so ratios within one run are
meaningful, absolute numbers are not.

    python -m bench fairness [--rounds 3] [--checkout /tmp/before]

Writes OUT/fairness.{json,md}; current figures: docs/results.md, "Fair scheduling".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import click
import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench.fairness")

TARGET_RATIO = 2.0
WORDS = ("cell protein gene expression mitochondria membrane receptor pathway immune response virus infection "
         "clinical trial dose patient outcome risk cohort brain neuron signal tumour growth factor enzyme binding "
         "structure sequence variant mutation therapy drug effect model data analysis").split()
HEADERS = {"Content-Type": "application/json"}


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " ".join(words)[:chars]


def bodies(big_docs: int, big_chars: int, seed: int = 0) -> tuple[bytes, list[bytes]]:
    """The large request's body and 50 different 3-document bodies (documents of 20 to 60 words)."""
    rng = random.Random(seed)
    pool = [_text(rng, big_chars) for _ in range(20)]
    big = {"query": "protein binding in the immune response",
           "documents": [f"{i} {pool[i % len(pool)]}"[:big_chars] for i in range(big_docs)]}
    small = [{"query": " ".join(rng.sample(WORDS, 3)),
              "documents": [" ".join(rng.choices(WORDS, k=rng.randint(20, 60))) for _ in range(3)]}
             for _ in range(50)]
    return json.dumps(big).encode(), [json.dumps(b).encode() for b in small]


async def _small_loop(url: str, payloads: list[bytes], stop: threading.Event,
                      samples: list[tuple[float, float, int]]) -> None:
    async with httpx.AsyncClient(timeout=120) as client:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            r = await client.post(f"{url}/v1/rerank", content=payloads[i % len(payloads)], headers=HEADERS)
            samples.append((t0, time.perf_counter(), r.status_code))
            i += 1


def _small_requests(url: str, payloads: list[bytes], clients: int, stop: threading.Event) -> list[tuple]:
    samples: list[tuple[float, float, int]] = []

    async def main() -> None:
        await asyncio.gather(*(_small_loop(url, payloads[k::clients], stop, samples) for k in range(clients)))

    asyncio.run(main())
    return samples


def alone(url: str, payloads: list[bytes], clients: int, duration: float) -> list[float]:
    """Latencies (s) of the small requests with nothing else running."""
    stop = threading.Event()
    timer = threading.Timer(duration, stop.set)
    timer.start()
    samples = _small_requests(url, payloads, clients, stop)
    if any(status != 200 for _, _, status in samples):
        raise RuntimeError(f"small requests failed alone: {sorted({s for _, _, s in samples})}")
    return [t1 - t0 for t0, t1, _ in samples]


def beside_big(url: str, payloads: list[bytes], clients: int, big: bytes) -> tuple[list[float], float]:
    """Latencies (s) of the small requests sent while the large request was in flight (however long they took),
    and the large request's own latency."""
    stop = threading.Event()
    span: dict[str, float] = {}

    def send_big() -> None:
        time.sleep(0.2)  # the small clients are running when it arrives
        with httpx.Client(timeout=600) as client:
            span["start"] = time.perf_counter()
            r = client.post(f"{url}/v1/rerank", content=big, headers=HEADERS)
            span["end"] = time.perf_counter()
        if r.status_code != 200:
            raise RuntimeError(f"the large request failed: {r.status_code} {r.text[:300]}")
        stop.set()

    sender = threading.Thread(target=send_big)
    sender.start()
    samples = _small_requests(url, payloads, clients, stop)
    sender.join()
    inside = [(t0, t1, s) for t0, t1, s in samples if span["start"] <= t0 < span["end"]]
    if any(s != 200 for _, _, s in inside):
        raise RuntimeError(f"small requests failed beside the large one: {sorted({s for _, _, s in inside})}")
    return [t1 - t0 for t0, t1, _ in inside], span["end"] - span["start"]


def p(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) in ms."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure(url: str, big: bytes, payloads: list[bytes], clients: int, duration: float,
            rounds: int) -> dict[str, Any]:
    """Both phases, taking turns for ``rounds`` rounds; pooled percentiles and per-round ratios."""
    pooled: dict[str, list[float]] = {"alone": [], "beside": []}
    per_round: list[dict[str, float]] = []
    big_s: list[float] = []
    for rnd in range(rounds):
        a = alone(url, payloads, clients, duration)
        b, big_latency = beside_big(url, payloads, clients, big)
        pooled["alone"] += a
        pooled["beside"] += b
        big_s.append(big_latency)
        per_round.append({"alone_p95_ms": p(a, 0.95), "beside_p95_ms": p(b, 0.95), "n_beside": len(b),
                          "big_s": big_latency})
        logger.info("round %d: alone p95 %.1f ms (%d), beside p95 %.1f ms (%d), large request %.2f s", rnd + 1,
                    p(a, 0.95), len(a), p(b, 0.95), len(b), big_latency)
    out: dict[str, Any] = {phase: {"n": len(v), "p50_ms": p(v, 0.5), "p95_ms": p(v, 0.95), "max_ms": 1000 * max(v)}
                           for phase, v in pooled.items()}
    out["ratio_p95"] = out["beside"]["p95_ms"] / out["alone"]["p95_ms"]
    out["ratio_p95_per_round"] = [r["beside_p95_ms"] / r["alone_p95_ms"] for r in per_round]
    out["big_request_s"] = {"median": statistics.median(big_s), "all": big_s}
    out["rounds"] = per_round
    return out


def markdown(result: dict[str, Any]) -> str:
    m = result["measured"]
    lines = [
        "# Fair scheduling: small requests beside a large one",
        "",
        f"Model: {result['model']}. Small requests: 3 documents of 20-60 words, {result['clients']} closed-loop "
        f"client(s). Large request: {result['big_docs']} documents x {result['big_chars']} characters. "
        f"{result['rounds']} rounds, phases taking turns. Server flags: `{' '.join(result['server_flags']) or '-'}`.",
        "",
        "| small 3-document requests | n | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for phase, label in (("alone", "alone"), ("beside", "beside the large request")):
        r = m[phase]
        lines.append(f"| {label} | {r['n']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} |")
    ratios = ", ".join(f"{x:.2f}" for x in m["ratio_p95_per_round"])
    lines += ["", f"p95 beside / p95 alone: **{m['ratio_p95']:.2f}x** (per round: {ratios}; target <= "
              f"{TARGET_RATIO:g}x). The large request took {m['big_request_s']['median']:.2f} s (median)."]
    return "\n".join(lines) + "\n"


@command(__doc__)
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Exported model dir [default: the bench stand-in, built in --work].")
@click.option("--work", default="/tmp/distilrank_load_shedding", type=click.Path(file_okay=False),
              help="Where the stand-in model is built (shared with bench load_shedding).")
@click.option("--checkout", default=None, type=click.Path(file_okay=False),
              help="Serve from this source tree instead of this checkout (a git worktree of another commit).")
@click.option("--rounds", default=3, type=click.IntRange(1, 100), help="Rounds of both phases.")
@click.option("--duration", default=5.0, type=click.FloatRange(0.5, 600), help="Seconds of the alone phase.")
@click.option("--clients", default=1, type=click.IntRange(1, 64), help="Closed-loop clients of small requests.")
@click.option("--big-docs", default=1000, type=click.IntRange(1, 100_000), help="Documents of the large request.")
@click.option("--big-chars", default=20_000, type=click.IntRange(1, 1_000_000),
              help="Characters per document of the large request.")
@click.option("--server-arg", "server_args", multiple=True, help="An extra flag for distilrank serve (repeat).")
@click.option("--out", "out_dir", default=str(REPO / "bench" / "results"))
def main(model_dir: str | None, work: str, checkout: str | None, rounds: int, duration: float, clients: int,
         big_docs: int, big_chars: int, server_args: tuple[str, ...], out_dir: str) -> None:
    from bench.load_shedding import build_model
    from ranker.process import start_serve, stop_serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    Path(work).mkdir(parents=True, exist_ok=True)
    model = Path(model_dir) if model_dir else build_model(Path(work))
    big, small = bodies(big_docs, big_chars)
    flags = ["--no-spin", "--max-docs", str(max(big_docs, 1000)), "--max-queue", str(max(big_docs, 1024)),
             "--max-chars", str(max(big_chars, 20_000)), *server_args]
    proc, url = start_serve(model, *flags, quiet=True, checkout=checkout)
    try:
        measured = measure(url, big, small, clients, duration, rounds)
    finally:
        stop_serve(proc)
    result = {"model": "random 2-layer BERT (hidden 256), fp32 ONNX, max_seq_len 128" if not model_dir
              else str(model), "checkout": checkout or str(REPO), "server_flags": flags, "clients": clients,
              "rounds": rounds, "duration_s": duration, "big_docs": big_docs, "big_chars": big_chars,
              "big_body_bytes": len(big), "target_ratio": TARGET_RATIO, "measured": measured,
              "target_met": measured["ratio_p95"] <= TARGET_RATIO}
    path = write_results(Path(out_dir) / "fairness", result, markdown(result))
    click.echo(markdown(result))
    click.echo(f"wrote {path} and its .md")


if __name__ == "__main__":
    from bench import run

    run(main)
