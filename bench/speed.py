"""Speed at quality: students at L6/L3/L2 x token budgets x fp32/int8, side by side in one run.

For each variant the student is exported with Optimum (fp32 ONNX, ORT O2 graph optimisation) and scored
through the one scorer (``distill.core.cross_encoder``, the serving path's tokenisation and truncation). int8
(``--int8-recipe``): ``dynamic`` = the exporter's default recipe, per-channel dynamic int8 of the O2 graph,
scored one pair per ONNX call as the exporter gates and the ranker serves it (dynamic activation scales span
the whole call, so batching would make a pair's score depend on its batch mates); ``static-edges`` =
calibrated static per-channel QDQ with the first/last layer and the attention products kept fp32:

* nDCG@10 reranking BM25's top ``--depth`` of EVERY test query (SciFact test: 300 queries);
* throughput: pairs/s over that whole rerank (1 user, length-bucketed batches of 16), on the ONNX Runtime
  sessions the ranker would open for that export (``--sessions``/``--threads`` unset: one 2-thread session for
  batches, one single-thread session per core for one pair per call; ``distill.core.cross_encoder.session_layout``);
* latency of one request (1 query x 20 and x 50 passages, BM25 top 50 of the first test queries), p50/p95
  at 1 user and at 2 concurrent users (two threads sharing the scorer, as two HTTP clients would);
* achieved GFLOP/s over the real (unpadded) tokens, beside a float32 GEMM gauge measured in the same run.

    python -m bench speed --student L6=runs/student/model --student L3=exp/l3/student/model \\
        --drop L3-dropped=runs/student/model:3 --caps 32:160 --caps 32:96 --int8 L3

``--backend`` (repeatable) measures each variant under several runtimes and precisions side by side instead:
``onnxruntime-fp32``, ``onnxruntime-int8`` (the ``--int8-recipe``), ``openvino-fp32``, ``openvino-bf16`` and
``openvino-int8`` (NNCF, calibrated on train queries), the names of the exporter's recipes. Every compiled model is
warmed up first (a first call allocates, and OpenVINO compiles shapes on first use); then the rounds interleave:
each test query is scored by every backend in turn (rotating which goes first), and each latency round runs every
backend once, so load from other work on a shared machine falls on all rows alike:

    python -m bench speed --student L6=runs/student/model --caps model --max-queries 40 \\
        --backend onnxruntime-fp32 --backend onnxruntime-int8 --backend openvino-fp32 \\
        --backend openvino-bf16 --backend openvino-int8

Writes OUT/PREFIX.{json,md} and PREFIX_pareto.png (default PREFIX: speed). Ratios are against the first variant
(the first ``--student`` at the first ``--caps``); compare rows of one run only (the machine is shared). Current
figures: docs/results.md, "Speed at quality".
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results
from distill.core.atomic_io import atomic_write
from distill.core.cross_encoder import TokenCaps, load_caps
from distill.core.errors import ConfigError
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries
from export.exporter import Int8Recipe

logger = logging.getLogger("bench.speed")
REPO = Path(__file__).resolve().parent.parent


def gemm_gauge(reps: int = 20) -> dict[str, float]:
    """float32 GEMM of BERT-layer shape (512 tokens x 384 -> 1536), GFLOP/s median and peak."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 384), dtype=np.float32)
    b = rng.standard_normal((384, 1536), dtype=np.float32)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        rates.append(10 * 2 * 512 * 384 * 1536 / (time.perf_counter() - t0) / 1e9)
    return {"median_gflops": statistics.median(rates), "peak_gflops": max(rates)}


def flops_per_pair(n_tokens: int, cfg: dict[str, Any]) -> float:
    """Forward FLOPs of a BERT encoder on one unpadded sequence (linear layers + attention products)."""
    h, i, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    linear = 2 * (4 * h * h + 2 * h * i) * n_tokens
    attention = 2 * 2 * n_tokens * n_tokens * h
    return n_layers * (linear + attention)


#: --int8-recipe -> the exporter's recipe of that name
INT8_RECIPES = {"dynamic": Int8Recipe("dynamic", True), "static-edges": Int8Recipe("static", True, keep_edges=True)}


def export_variant(src: Path, work: Path, precision: str, calib_pairs: list[tuple[str, str]], caps: TokenCaps,
                   int8_recipe: str = "dynamic") -> Path:
    from export import (
        calibration_batches,
        export_fp32,
        optimize,
        quantize_dynamic_int8,
        quantize_static_int8,
        resolve_isa,
        sensitive_nodes,
    )
    from export.scorers import onnx_scorer

    raw = work / "raw" / "model.onnx"
    if not raw.exists():
        export_fp32(src, raw.parent)
    opt = work / "o2" / "model_optimized.onnx"
    if not opt.exists():
        optimize(raw.parent, "O2", opt.parent)
    if precision == "fp32":
        return opt
    if int8_recipe == "dynamic":
        dst = work / "int8_dynamic.onnx"
        return dst if dst.exists() else quantize_dynamic_int8(opt, dst, resolve_isa("auto"), True, None)
    batches = calibration_batches(onnx_scorer(raw, src, caps), calib_pairs)
    return quantize_static_int8(raw, work / f"int8_static_{_caps_label(caps).replace('/', '_')}.onnx",
                                resolve_isa("auto"), True, ("MatMul",), batches, exclude=sensitive_nodes(raw))


@dataclass(frozen=True)
class _Inputs:
    """What every variant is measured on: BM25's top ``depth`` of the test queries, the latency requests
    (1 query x 20 and x 50 passages) and, for static int8, calibration pairs from training queries."""

    qids: list[str]
    qrels: dict[str, dict[str, int]]
    eval_pairs: dict[str, list[tuple[str, str]]]
    eval_ids: dict[str, list[str]]
    lat_q: list[str]
    requests: dict[int, list[list[tuple[str, str]]]]
    calib_pairs: list[tuple[str, str]]


def _inputs(data: Path, depth: int, max_queries: int, latency_queries: int, calibrate: bool) -> _Inputs:
    from distill.core.bm25 import BM25Index
    from export import calibration_pairs

    corpus = read_corpus(data / "corpus.jsonl")
    queries = read_queries(data / "queries.test.tsv")
    qrels = read_qrels(data / "qrels.test.txt")
    qids = [q for q in sorted(queries) if q in qrels]
    if max_queries:
        qids = qids[:max_queries]
    bm25 = BM25Index(corpus)
    first = bm25.search({q: queries[q] for q in qids}, top_k=max(depth, 50))
    eval_pairs = {q: [(queries[q].text, corpus[d].full_text) for d in list(first[q])[:depth]] for q in qids}
    eval_ids = {q: list(first[q])[:depth] for q in qids}
    lat_q = [q for q in qids if len(first[q]) >= 50][:latency_queries]
    requests = {n: [[(queries[q].text, corpus[d].full_text) for d in list(first[q])[:n]] for q in lat_q]
                for n in (20, 50)}
    calib_pairs: list[tuple[str, str]] = []
    if calibrate:  # calibrated on train queries, never the test ones
        train_q = read_queries(data / "queries.train.tsv")
        calib_q = dict(sorted(train_q.items())[:32])
        calib_run = bm25.search(calib_q, top_k=20)
        calib_pairs = calibration_pairs({q: [(calib_q[q].text, corpus[d].full_text) for d in calib_run[q]]
                                         for q in calib_q}, 128)
    return _Inputs(qids, qrels, eval_pairs, eval_ids, lat_q, requests, calib_pairs)


def _measure(name: str, src: Path, work: Path, precision: str, caps: TokenCaps, inp: _Inputs, int8_recipe: str,
             threads: int | None, sessions: int | None, reps: int) -> dict[str, Any]:
    """One row: the variant exported, then its nDCG@10, pairs/s, GFLOP/s and request latency."""
    from distill.core.cross_encoder import session_layout
    from export.latency import measure_load
    from export.scorers import onnx_scorer

    hf = json.loads((src / "config.json").read_text())
    qids, eval_pairs = inp.qids, inp.eval_pairs
    onnx_path = export_variant(src, work / name, precision, inp.calib_pairs, caps, int8_recipe)
    # the exporter's rule: dynamic int8 is scored (gated, served) one pair per ONNX call
    per_call = INT8_RECIPES[int8_recipe].pairs_per_call_or(16) if precision == "int8" else 16
    scorer = onnx_scorer(onnx_path, src, caps, per_call, threads=threads, sessions=sessions)
    layout = session_layout(per_call, threads, sessions)
    scorer.score_pairs(eval_pairs[qids[0]])  # warm-up
    tokens = [len(r[0]) for q in qids if eval_pairs[q]  # (a query BM25 finds nothing for has no pairs)
              for r in scorer.encoder.encode(*zip(*eval_pairs[q], strict=True))]
    t0 = time.perf_counter()
    run = {q: dict(zip(inp.eval_ids[q], map(float, scorer.score_pairs(eval_pairs[q])), strict=True)) for q in qids}
    secs = time.perf_counter() - t0
    n_pairs = sum(len(p) for p in eval_pairs.values())
    flops = sum(flops_per_pair(n, hf) for n in tokens)
    row = {"variant": name, "layers": hf["num_hidden_layers"], "precision": precision,
           "int8_recipe": int8_recipe if precision == "int8" else None, "pairs_per_call": per_call,
           "sessions": layout[0], "threads_per_session": layout[1], "caps": _caps_label(caps),
           "ndcg@10": evaluate({q: inp.qrels[q] for q in qids}, run, ["ndcg@10"]).metrics["ndcg@10"],
           "pairs_per_s": n_pairs / secs, "mean_real_tokens": float(np.mean(tokens)),
           "achieved_gflops": flops / secs / 1e9,
           "latency": {f"x{n}_u{u}": measure_load(scorer, inp.requests[n], u, reps) for n in (20, 50) for u in (1, 2)}}
    scorer.close()
    logger.info("%s %s %s: nDCG@10 %.4f, %.1f pairs/s, x20 p95 %.0f ms", name, precision, row["caps"],
                row["ndcg@10"], row["pairs_per_s"], row["latency"]["x20_u1"]["p95_ms"])
    return row


#: --backend values: the exporter's recipe names (onnxruntime-int8 = the --int8-recipe)
BACKENDS = ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")


def backend_scorer(backend: str, src: Path, work: Path, caps: TokenCaps, inp: _Inputs, int8_recipe: str,
                   threads: int | None, sessions: int | None) -> Any:
    """The scorer of one ``--backend`` over ``src``, built as the exporter builds that recipe and served as the
    ranker serves it (pairs per call, sessions or streams from :func:`session_layout`)."""
    from export import calibration_batches, convert_to_ir, quantize_openvino_int8
    from export.scorers import onnx_scorer, openvino_scorer

    if backend.startswith("onnxruntime-"):
        precision = backend.rsplit("-", 1)[1]
        per_call = INT8_RECIPES[int8_recipe].pairs_per_call_or(16) if precision == "int8" else 16
        path = export_variant(src, work, precision, inp.calib_pairs, caps, int8_recipe)
        return onnx_scorer(path, src, caps, per_call, threads=threads, sessions=sessions)
    export_variant(src, work, "fp32", inp.calib_pairs, caps)  # the plain export the IR is converted from
    ir = work / "openvino" / "openvino_model.xml"
    if not ir.exists():
        convert_to_ir(work / "raw" / "model.onnx", ir.parent)
    precision = backend.rsplit("-", 1)[1]
    if precision == "int8":
        label = _caps_label(caps).replace("/", "_").replace(":", "_")
        batches = calibration_batches(onnx_scorer(work / "raw" / "model.onnx", src, caps), inp.calib_pairs)
        ir = quantize_openvino_int8(ir, work / f"openvino_int8_{label}", batches)
    return openvino_scorer(ir, src, caps, precision, 16, threads=threads, sessions=sessions)


def _load_round(scorer: Any, requests: list[list[tuple[str, str]]], users: int) -> tuple[list[float], float]:
    """One pass of ``users`` threads over every request (each starting at a different one): per-request ms, wall s."""
    import threading

    times: list[float] = []
    lock = threading.Lock()

    def user(offset: int) -> None:
        for k in range(len(requests)):
            t0 = time.perf_counter()
            scorer.score_pairs(requests[(k + offset) % len(requests)])
            with lock:
                times.append(1000 * (time.perf_counter() - t0))

    t0 = time.perf_counter()
    pool = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return times, time.perf_counter() - t0


def _interleaved(scorers: dict[str, Any], inp: _Inputs, reps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Throughput pass and latency rounds with the backends interleaved: (per backend: seconds and run,
    per backend: latency summaries)."""
    names = list(scorers)
    secs = dict.fromkeys(names, 0.0)
    runs: dict[str, dict[str, dict[str, float]]] = {n: {} for n in names}
    for i, q in enumerate(q for q in inp.qids if inp.eval_pairs[q]):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            scores = scorers[name].score_pairs(inp.eval_pairs[q])
            secs[name] += time.perf_counter() - t0
            runs[name][q] = dict(zip(inp.eval_ids[q], map(float, scores), strict=True))
    latency: dict[str, dict[str, Any]] = {n: {} for n in names}
    for n_docs in (20, 50):
        for users in (1, 2):
            times: dict[str, list[float]] = {n: [] for n in names}
            walls = dict.fromkeys(names, 0.0)
            for rep in range(reps):
                for name in names[rep % len(names):] + names[:rep % len(names)]:
                    t, w = _load_round(scorers[name], inp.requests[n_docs], users)
                    times[name] += t
                    walls[name] += w
            for name in names:
                arr = np.asarray(times[name])
                pairs = sum(len(r) for r in inp.requests[n_docs]) * reps * users
                latency[name][f"x{n_docs}_u{users}"] = {
                    "p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
                    "pairs_per_s": pairs / walls[name], "n": len(arr)}
    return {n: (secs[n], runs[n]) for n in names}, latency


def _measure_backends(name: str, src: Path, work: Path, caps: TokenCaps, inp: _Inputs, backends: tuple[str, ...],
                      int8_recipe: str, threads: int | None, sessions: int | None, reps: int) -> list[dict[str, Any]]:
    """One row per backend of one variant, measured side by side (see the module docstring)."""
    from distill.core.cross_encoder import session_layout

    hf = json.loads((src / "config.json").read_text())
    scorers = {b: backend_scorer(b, src, work / name, caps, inp, int8_recipe, threads, sessions) for b in backends}
    warm = inp.eval_pairs[inp.qids[0]]
    for scorer in scorers.values():  # every compiled model (every replica) allocated, every shape seen once
        scorer.warmup(*zip(*inp.requests[50][0], strict=True))
        for _ in range(2):
            scorer.score_pairs(warm)
            scorer.score_pairs(inp.requests[50][0])
    tokens = [len(r[0]) for q in inp.qids if inp.eval_pairs[q]
              for r in scorers[backends[0]].encoder.encode(*zip(*inp.eval_pairs[q], strict=True))]
    flops = sum(flops_per_pair(n, hf) for n in tokens)
    n_pairs = sum(len(p) for p in inp.eval_pairs.values())
    passes, latency = _interleaved(scorers, inp, reps)
    rows = []
    for backend, scorer in scorers.items():
        secs, run = passes[backend]
        backend_obj = scorer.backend
        rows.append({"variant": name, "layers": hf["num_hidden_layers"], "backend": backend,
                     "precision": backend.rsplit("-", 1)[1],
                     "int8_recipe": int8_recipe if backend == "onnxruntime-int8" else None,
                     "pairs_per_call": scorer.pairs_per_call, "sessions": len(scorer.backends),
                     "threads_per_session": getattr(backend_obj, "threads", None)
                     or session_layout(scorer.pairs_per_call, threads, sessions)[1],
                     "caps": _caps_label(caps),
                     "ndcg@10": evaluate({q: inp.qrels[q] for q in run}, run, ["ndcg@10"]).metrics["ndcg@10"],
                     "pairs_per_s": n_pairs / secs, "mean_real_tokens": float(np.mean(tokens)),
                     "achieved_gflops": flops / secs / 1e9, "latency": latency[backend]})
        scorer.close()
        logger.info("%s %s %s: nDCG@10 %.4f, %.1f pairs/s, x20 p95 %.0f ms", name, backend, rows[-1]["caps"],
                    rows[-1]["ndcg@10"], rows[-1]["pairs_per_s"], latency[backend]["x20_u1"]["p95_ms"])
    return rows


@command(__doc__)
@click.option("--student", multiple=True, metavar="NAME=DIR", help="a trained student (HF dir)")
@click.option("--drop", multiple=True, metavar="NAME=DIR:K",
              help="DIR with only K encoder layers kept after training (the cut baseline)")
@click.option("--caps", multiple=True, metavar="Q:D|model",
              help="query:document token caps [default: 32:160]; 'model' = each student's own trained budget "
                   "(its scoring.json: e.g. query <= 32, the document the rest of a 192-token pair)")
@click.option("--int8", multiple=True, metavar="NAME", help="also measure this variant in int8")
@click.option("--backend", "backends", multiple=True, type=click.Choice(BACKENDS),
              help="measure every variant under these runtimes and precisions, side by side in interleaved rounds "
                   "(repeat; the first is the baseline of the ratios) [default: fp32 and --int8 on ONNX Runtime]")
@click.option("--int8-recipe", type=click.Choice(list(INT8_RECIPES)), default="dynamic",
              help="dynamic (the exporter's default: one pair per ONNX call) or static-edges (batched)")
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--depth", type=int, default=20)
@click.option("--max-queries", type=int, default=0, help="0 = every test query")
@click.option("--latency-queries", type=int, default=5)
@click.option("--reps", type=int, default=3)
@click.option("--threads", type=int, default=None, help="ORT intra-op threads per session [default: as served]")
@click.option("--sessions", type=int, default=None, help="ORT sessions per variant [default: as served]")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
@click.option("--prefix", default="speed")
def main(student: tuple[str, ...], drop: tuple[str, ...], caps: tuple[str, ...], int8: tuple[str, ...],
         backends: tuple[str, ...], int8_recipe: str, data: Path, depth: int, max_queries: int, latency_queries: int,
         reps: int,
         threads: int | None, sessions: int | None, out: Path, prefix: str) -> int:
    caps_list = [_parse_caps(c) for c in (caps or ["32:160"])]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("bm25s", "optimum", "onnxruntime", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from export import resolve_isa
    from export.layers import keep_layers

    t_start = time.perf_counter()
    calibrate = bool(int8 or "onnxruntime-int8" in backends) and int8_recipe == "static-edges" \
        or "openvino-int8" in backends
    inp = _inputs(data, depth, max_queries, latency_queries, calibrate)
    models: list[tuple[str, Path]] = []
    for spec in student:
        name, path = spec.split("=", 1)
        models.append((name, Path(path)))
    gauge_start = gemm_gauge()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=".speed-") as tmp:
        work = Path(tmp)
        for spec in drop:
            name, rest = spec.split("=", 1)
            path, k = rest.rsplit(":", 1)
            models.append((name, keep_layers(path, int(k), work / f"{name}_hf")))
        for name, src in models:
            if backends:
                for spec_caps in caps_list:
                    token_caps = load_caps(src) if spec_caps == "model" else TokenCaps(sum(spec_caps) + 3, *spec_caps)
                    rows += _measure_backends(name, src, work, token_caps, inp, backends, int8_recipe, threads,
                                              sessions, reps)
                continue
            for precision in ["fp32"] + (["int8"] if name in int8 else []):
                for spec_caps in caps_list:
                    token_caps = load_caps(src) if spec_caps == "model" else TokenCaps(sum(spec_caps) + 3, *spec_caps)
                    rows.append(_measure(name, src, work, precision, token_caps, inp, int8_recipe, threads, sessions,
                                         reps))
    gauge_end = gemm_gauge()
    base = rows[0]
    for r in rows:
        r["speedup_vs_first"] = r["pairs_per_s"] / base["pairs_per_s"]
        r["ndcg_delta_points_vs_first"] = 100 * (r["ndcg@10"] - base["ndcg@10"])
    meta = {"data": str(data), "n_queries": len(inp.qids), "depth": depth, "threads": threads, "sessions": sessions,
            "latency_queries": inp.lat_q, "reps": reps, "cpu": _cpu_name(), "isa": resolve_isa("auto"),
            "cores": os.cpu_count(), "gemm_gauge_start": gauge_start, "gemm_gauge_end": gauge_end,
            "wall_time_s": round(time.perf_counter() - t_start, 1)}
    md = _markdown(rows, meta)
    write_results(out / prefix, {"meta": meta, "rows": rows}, md)
    _plot(rows, out / f"{prefix}_pareto.png")
    print(md)
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse_caps(spec: str) -> str | tuple[int, int]:
    """``--caps`` value: ``model`` or ``Q:D`` (two positive integers)."""
    if spec == "model":
        return spec
    parts = spec.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--caps {spec!r}: expected Q:D (query and document token caps, e.g. 32:157) or 'model'")
    return int(parts[0]), int(parts[1])


def _caps_label(caps: TokenCaps) -> str:
    """``q:d``, or ``q:rest/T`` when the document takes what the query leaves of a T-token pair."""
    if caps.max_doc_tokens is None:
        return f"{caps.max_query_tokens}:rest/{caps.max_seq_len}"
    return f"{caps.max_query_tokens}:{caps.max_doc_tokens}"


def _markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    g0, g1 = meta["gemm_gauge_start"], meta["gemm_gauge_end"]
    lines = [f"# Speed at quality ({meta['n_queries']} test queries, BM25 top {meta['depth']} reranked, "
             "ONNX Runtime sessions x threads as listed)\n",
             f"CPU: {meta['cpu']}, {meta['cores']} cores, int8 kernels for {meta['isa']}.\n",
             f"GEMM gauge (fp32, 512x384x1536): median {g0['median_gflops']:.1f} / peak {g0['peak_gflops']:.1f} "
             f"GFLOP/s at the start, {g1['median_gflops']:.1f} / {g1['peak_gflops']:.1f} at the end. "
             "Ratios are against the first row. Latency: 1 query x N passages, p50/p95 ms, u1 = one user, "
             "u2 = two concurrent users.\n",
             "| variant | layers | precision | pairs/call | sessions×threads | caps q:d | nDCG@10 | Δ pts "
             "| pairs/s | × | achieved GFLOP/s | x20 u1 p50/p95 | x20 u2 p50/p95 | x50 u1 p50/p95 | x50 u2 p50/p95 |",
             "|---|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency"]
        cell = [f"{lat[k]['p50_ms']:.0f}/{lat[k]['p95_ms']:.0f}" for k in ("x20_u1", "x20_u2", "x50_u1", "x50_u2")]
        recipe = f" {r['int8_recipe']}" if r.get("int8_recipe") else ""
        if r.get("backend"):
            recipe = f" ({r['backend'].rsplit('-', 1)[0]}{recipe})"
        lines.append(f"| {r['variant']} | {r['layers']} | {r['precision']}{recipe} | {r.get('pairs_per_call', 16)} | "
                     f"{r['sessions']}×{r['threads_per_session']} | {r['caps']} | {r['ndcg@10']:.4f} | "
                     f"{r['ndcg_delta_points_vs_first']:+.1f} | {r['pairs_per_s']:.1f} | "
                     f"{r['speedup_vs_first']:.2f} | {r['achieved_gflops']:.1f} | " + " | ".join(cell) + " |")
    return "\n".join(lines) + f"\n\nWall time {meta['wall_time_s']} s.\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib missing (pip install 'distilrank[plot]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["pairs_per_s"], r["ndcg@10"], marker="o" if r["precision"] == "fp32" else "s")
        label = f"{r['variant']} {r.get('backend') or r['precision']} {r['caps']}"
        ax.annotate(label, (r["pairs_per_s"], r["ndcg@10"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("pairs/s (1 user, sessions or streams as served)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("speed vs quality (higher and further right is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from bench import run

    run(main)
