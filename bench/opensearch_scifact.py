"""SciFact through a real OpenSearch node: BM25 vs BM25 + the served blend, and its latency.

BM25 from OpenSearch, with the pipeline's bm25s beside it. The rescore runs in the plugin and, for comparison,
client-side:

    nice -n 10 python -m bench opensearch_scifact --model SERVED_DIR [--windows 20,50] [--max-queries 0]

What runs: ``distilrank serve --model SERVED_DIR`` on 127.0.0.1 (``--scores card``: the convention its card's
interpolation expects), an OpenSearch node with the freshly built plugin and the analysis-common module (its
own root and port, so the test suite's node is untouched), the SciFact corpus indexed with ``--analyzer``
(english: stemming) and the pipeline's BM25 k1/b, then per test query and window size:

* ``first_stage``: the ``multi_match`` BM25 query alone (``took`` recorded), beside the pipeline's bm25s run;
* ``plugin``: the same query with the ``distilrank`` rescore clause and no weights: the served card's
  interpolation (``score_mode interpolate``) at that window. The rescore step's latency is the plugin's own
  ranker-call time (delta of ``total_latency_ms`` in ``GET /_plugins/distilrank/stats`` around the search)
  and, for comparison, ``took(rescored) - took(first stage)``;
* ``client``: the first stage's window rescored in Python (``opensearch_plugin.rescore_hits`` over a
  ``RankerPool``, one shard); its step latency is the wall time of that call.

Plugin and client-side agreement: identical top 10 (fraction of queries) and the largest |score difference|
(0 when they agree: both return the engine's float32 blend). ``--also-rerank`` adds pure reranking inside the
window (``score_mode total``, ``query_weight 0``). Then Locust's ``opensearch`` scenario at ``--loadtest-users``.
Writes OUT/opensearch_scifact.{json,md}.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger(__name__)
INDEX = "scifact"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


@command(__doc__)
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Served model dir (model_card.json with its interpolation), served by `distilrank serve`.")
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=REPO.parent / "shared" / "data" / "beir-scifact", show_default=True)
@click.option("--windows", default="20,50", show_default=True)
@click.option("--max-queries", default=0, show_default=True, help="0 = every test query with qrels.")
@click.option("--size", default=100, show_default=True, help="Hits per search (evaluation depth).")
@click.option("--analyzer", default="english", show_default=True, help="Analyzer of the index's title and text.")
@click.option("--also-rerank", is_flag=True, help="Also pure reranking in the window (total, query_weight 0).")
@click.option("--threads", default=os.cpu_count() or 1, show_default=True)
@click.option("--port", default=9250, show_default=True, help="OpenSearch HTTP port for this bench's node.")
@click.option("--os-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Node root [default: $DISTILRANK_HOME/opensearch-bench].")
@click.option("--loadtest-users", default="1,2,4", show_default=True,
              help="After the quality runs: Locust `opensearch` scenario (window 20) at these user counts; '' = skip.")
@click.option("--loadtest-run-time", default="30s", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / "bench" / "results")
def main(model_dir: Path, data: Path, windows: str, max_queries: int, size: int, analyzer: str, also_rerank: bool,
         threads: int, port: int, os_root: Path | None, loadtest_users: str, loadtest_run_time: str,
         out_dir: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import opensearch_plugin as osp
    from distill.core.formats import read_qrels, read_queries
    from distill.core.model_card import load_model_card
    from ranker.process import start_serve, stop_serve

    qrels = read_qrels(data / "qrels.test.txt")
    queries = {qid: q for qid, q in read_queries(data / "queries.test.tsv").items() if qid in qrels}
    if max_queries:
        queries = dict(list(queries.items())[:max_queries])  # file order, as `distilrank pipeline` picks them
    qrels = {qid: qrels[qid] for qid in queries}  # evaluation counts unanswered judged queries as 0
    card = load_model_card(model_dir, verify=False)
    cfg = osp.NodeConfig(root=os_root or osp.distilrank_home() / "opensearch-bench", port=port)
    osp.stop(cfg)
    osp.install(cfg, osp.build_plugin())
    osp.start(cfg)
    proc, ranker_url = start_serve(model_dir, "--threads", str(threads), "--max-docs", "200", "--no-spin", quiet=True,
                                   timeout=180)
    report: dict = {"model_dir": str(model_dir), "model_name": card.display_name(model_dir),
                    "precision": card.precision, "max_seq_len": card.max_seq_len, "queries": len(queries),
                    "size": size, "analyzer": analyzer, "opensearch": osp.OPENSEARCH_VERSION,
                    "cpu_count": os.cpu_count(), "threads": threads, "loadavg_start": round(os.getloadavg()[0], 2),
                    "windows": {}}
    try:
        client = osp.client(cfg.url, timeout=120)
        client.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoints": [ranker_url],
                                                         "distilrank.ranker.read_timeout": "60s"}})
        report["documents"] = osp.ensure_index(cfg.url, INDEX, data / "corpus.jsonl", analyzer=analyzer).documents
        report["first_stage"] = _first_stage(client, queries, qrels, size)
        report["bm25s"] = _bm25s(data, queries, qrels, size)
        with osp.RankerPool(ranker_url, timeout=60) as pool:
            report["model"] = pool.model_defaults().to_dict()
            _measure_windows(client, queries, qrels, size, windows, also_rerank, pool, report)
        report["loadtest"] = _loadtest(cfg.url, data, [int(u) for u in loadtest_users.split(",") if u.strip()],
                                       loadtest_run_time, Path(tempfile.mkdtemp(prefix="opensearch_loadtest_")))
    finally:
        stop_serve(proc)
        osp.stop(cfg)
    report["loadavg_end"] = round(os.getloadavg()[0], 2)
    md = _markdown(report)
    write_results(out_dir / "opensearch_scifact", report, md)
    click.echo(md)


def _measure_windows(client, queries: dict, qrels: dict, size: int, windows: str, also_rerank: bool, pool,
                     report: dict) -> None:
    """The card's blend (and, with ``also_rerank``, pure reranking) at every window, plugin and client-side."""
    import opensearch_plugin as osp

    settings = []
    for w in sorted({int(w) for w in windows.split(",")}):
        settings.append((f"interpolate w{w}", osp.RescoreParams(window_size=w)))
        if also_rerank:
            settings.append((f"rerank w{w}", osp.RescoreParams(window_size=w, score_mode="total", query_weight=0.0,
                                                               rescore_query_weight=1.0)))
    for name, params in settings:
        resolved = params.resolved(pool.model_defaults())
        report["windows"][name] = {"window": params.window_size, "score_mode": params.score_mode,
                                   "clause": osp.rescore_clause("", resolved)["distilrank"],
                                   **_rescore(client, queries, qrels, size, params, pool)}
        logger.info("%s: %s", name, report["windows"][name])


def _bm25s(data: Path, queries: dict, qrels: dict, size: int) -> dict:
    """The pipeline's first stage (bm25s, Snowball English, same k1/b) on the same queries, for comparison."""
    from distill.core.bm25 import BM25Index
    from distill.core.evaluation import evaluate
    from distill.core.formats import read_corpus

    run = BM25Index(read_corpus(data / "corpus.jsonl")).search(queries, top_k=size)
    return {"metrics": evaluate(qrels, run).metrics}


def _first_stage(client, queries: dict, qrels: dict, size: int) -> dict:
    """The BM25 query alone for every query: its metrics and ``took`` percentiles."""
    import opensearch_plugin as osp
    from distill.core.evaluation import evaluate

    first_run: dict[str, dict[str, float]] = {}
    first_took: list[float] = []
    for qid, q in queries.items():
        resp = client.search(index=INDEX, body=osp.search_body(q.text, size))
        first_took.append(float(resp["took"]))
        first_run[qid] = {h["_id"]: float(h["_score"]) for h in resp["hits"]["hits"]}
    summary = {"metrics": evaluate(qrels, first_run).metrics,
               "took_p50_ms": _pct(first_took, 50), "took_p95_ms": _pct(first_took, 95)}
    logger.info("first stage: %s", summary)
    return summary


def _rescore(client, queries: dict, qrels: dict, size: int, params, score_fn) -> dict:
    """Every query rescored by the plugin and, from the same first stage, client-side: metrics, the rescore
    step's latency (ms) and how far the two agree."""
    import opensearch_plugin as osp
    from distill.core.evaluation import evaluate

    def stats(key: str) -> float:  # this node's counters (the bench runs one node)
        return float(client.transport.perform_request("GET", "/_plugins/distilrank/stats")[key])

    plugin_run: dict[str, dict[str, float]] = {}
    client_run: dict[str, dict[str, float]] = {}
    plugin_ms, took_delta, client_ms, same_top10, max_diff = [], [], [], 0, 0.0
    failures_before = stats("failures")
    for n, (qid, q) in enumerate(queries.items(), 1):
        before = stats("total_latency_ms")
        resp = client.search(index=INDEX, body=osp.search_body(q.text, size, params))
        plugin_ms.append(stats("total_latency_ms") - before)
        plugin_hits = [(h["_id"], float(np.float32(h["_score"]))) for h in resp["hits"]["hits"]]
        plugin_run[qid] = dict(plugin_hits)
        first = client.search(index=INDEX, body=osp.search_body(q.text, max(size, params.window_size)))
        took_delta.append(float(resp["took"]) - float(first["took"]))
        t0 = time.perf_counter()
        client_hits = osp.rescore_hits(first["hits"]["hits"], q.text, params, score_fn)[:size]
        client_ms.append((time.perf_counter() - t0) * 1000)
        client_run[qid] = dict(client_hits)
        same_top10 += [d for d, _ in plugin_hits[:10]] == [d for d, _ in client_hits[:10]]
        common = set(plugin_run[qid]) & set(client_run[qid])
        max_diff = max([max_diff] + [abs(plugin_run[qid][d] - client_run[qid][d]) for d in common])
        if n % 25 == 0:
            logger.info("window %d: %d/%d queries, plugin rescore p50 %.0f ms", params.window_size, n, len(queries),
                        _pct(plugin_ms, 50))
    return {
        "plugin": {"metrics": evaluate(qrels, plugin_run).metrics, "rescore_p50_ms": _pct(plugin_ms, 50),
                   "rescore_p95_ms": _pct(plugin_ms, 95), "took_delta_p50_ms": _pct(took_delta, 50),
                   "took_delta_p95_ms": _pct(took_delta, 95), "ranker_failures": stats("failures") - failures_before},
        "client": {"metrics": evaluate(qrels, client_run).metrics, "rescore_p50_ms": _pct(client_ms, 50),
                   "rescore_p95_ms": _pct(client_ms, 95)},
        "agreement": {"same_top10_fraction": same_top10 / len(queries), "max_abs_score_diff": max_diff},
    }


def _loadtest(url: str, data: Path, users: list[int], run_time: str, work: Path) -> list[dict]:
    """Closed-loop Locust runs of the ``opensearch`` scenario (``_search`` + distilrank rescore, window 20)."""
    from distill.core.errors import GateFailedError
    from loadtests import LoadTestConfig, build_payloads, run_loadtest

    work.mkdir(parents=True, exist_ok=True)
    slo = work / "measure_only.json"
    slo.write_text(json.dumps({"scenario": "opensearch", "description": "measure only"}))
    payloads = build_payloads(work / "payloads_20.json", 20, data / "corpus.jsonl", data / "queries.test.tsv")
    cells = []
    for u in users:
        cfg = LoadTestConfig(scenario="opensearch", host=url, users=u, spawn_rate=u, run_time=run_time, slo=slo,
                             passages=20, out=work / f"u{u}", index=INDEX)
        try:
            result = run_loadtest(cfg, payloads)
        except GateFailedError as exc:
            logger.error("opensearch load test at %d users made no request: %s", u, exc)
            result = json.loads((work / f"u{u}" / "slo_result.json").read_text(encoding="utf-8"))
        m = result["measured"]["total"]
        cells.append({"users": u, **{k: m[k] for k in ("requests", "failures", "p50_ms", "p95_ms", "p99_ms", "rps")}})
        logger.info("opensearch load test: %s", cells[-1])
    return cells


def _markdown(r: dict) -> str:
    fs, bm = r["first_stage"]["metrics"], r["bm25s"]["metrics"]
    interp = r["model"]["interpolation"]
    lines = [f"SciFact test ({r['queries']} queries, {r['documents']} docs), OpenSearch {r['opensearch']} BM25 "
             f"(`multi_match` title+text, {r['analyzer']} analyzer, the pipeline's k1/b) + distilrank rescore with "
             f"`{r['model_name']}` ({r['precision']}, max_seq_len {r['max_seq_len']}): the card's interpolation "
             f"(first_stage_weight {interp['first_stage_weight']}, {interp['first_stage_norm']}/"
             f"{interp['ranker_norm']}, {interp['score_convention']}, chosen by {interp['chosen_by']}). "
             f"{r['cpu_count']} cores, shared by OpenSearch, the ranker and the client. Rescore step = the plugin's "
             "own ranker-call time (stats delta), resp. the client's rescore call.", "",
             "| system | setting | window | nDCG@10 | MRR@10 | R@100 | rescore step p50 ms | p95 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|",
             f"| bm25s (pipeline first stage) | - | - | {bm['ndcg@10']:.4f} | {bm['mrr@10']:.4f} | "
             f"{bm.get('recall@100', float('nan')):.4f} | - | - |",
             f"| OpenSearch BM25 | - | - | {fs['ndcg@10']:.4f} | {fs['mrr@10']:.4f} | "
             f"{fs.get('recall@100', float('nan')):.4f} | - | - |"]
    for name, cell in r["windows"].items():
        for path, label in (("plugin", "BM25 + distilrank (plugin)"), ("client", "BM25 + distilrank (client-side)")):
            m = cell[path]["metrics"]
            lines.append(f"| {label} | {name} | {cell['window']} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                         f"{m.get('recall@100', float('nan')):.4f} | "
                         f"{cell[path]['rescore_p50_ms']:.0f} | {cell[path]['rescore_p95_ms']:.0f} |")
    lines += ["", "| setting | same top 10 (plugin vs client) | max abs score diff "
              "| plugin took delta p50 / p95 ms | ranker failures |",
              "|---|---:|---:|---:|---:|"]
    for name, cell in r["windows"].items():
        a = cell["agreement"]
        lines.append(f"| {name} | {a['same_top10_fraction']:.3f} | {a['max_abs_score_diff']:.2g} | "
                     f"{cell['plugin']['took_delta_p50_ms']:.0f} / {cell['plugin']['took_delta_p95_ms']:.0f} | "
                     f"{cell['plugin']['ranker_failures']:.0f} |")
    if r.get("loadtest"):
        lines += ["", "Locust `opensearch` scenario (`_search` + distilrank rescore, window 20, size 10), "
                  "closed-loop users:", "",
                  "| users | requests | failures | p50 ms | p95 ms | p99 ms | req/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for c in r["loadtest"]:
            lines.append(f"| {c['users']} | {c['requests']} | {c['failures']} | {c['p50_ms']:.0f} | "
                         f"{c['p95_ms']:.0f} | {c['p99_ms']:.0f} | {c['rps']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bench import run

    run(main)
