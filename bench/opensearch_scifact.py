"""SciFact through a real OpenSearch node: BM25 vs BM25 + distilrank rescore, and its latency.

The rescore runs in the plugin and, for comparison, client-side:

    nice -n 10 python -m bench opensearch_scifact --model EXPORTED_DIR [--windows 20,50] [--max-queries 0]

What runs: ``distilrank serve --model EXPORTED_DIR`` on 127.0.0.1, an OpenSearch node with the freshly
built plugin (its own root and port, so the test suite's node is untouched), the SciFact corpus indexed
with the project's mapping, then per test query and window size:

* ``first_stage``: the ``multi_match`` BM25 query alone (``took`` recorded);
* ``plugin``: the same query with the ``distilrank`` rescore clause; the rescore step's latency is the
  plugin's own ranker-call time (delta of ``total_latency_ms`` in ``GET /_plugins/distilrank/stats``
  around the search) and, for comparison, ``took(rescored) - took(first stage)``;
* ``client``: the first stage's hits rescored in Python through ``/v1/rerank`` with the same arithmetic
  (``opensearch_plugin.rescore_hits``); its step latency is the wall time of that call.

Plugin and client-side agreement: identical document order for the top 10 (fraction of queries) and the
largest |score difference|. Default weights: ``query_weight 0``, ``rescore_query_weight 1`` (pure
reranking inside the window; BM25 order below it), plus one blend at window 20 (``--blend-alpha``, the
pipeline's tuned interpolation weight, turned into OpenSearch weights without looking at test labels; 0 = skip).
Then Locust's ``opensearch`` scenario at ``--loadtest-users``. Writes OUT/opensearch_scifact.{json,md}. Not yet
measured with a current student (docs/results.md, "Not measured"; docs/opensearch.md, "Measuring it").
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


def _find(obj: object, key: str) -> float:
    """Sum of every ``key`` value in a nested stats document (one entry per node)."""
    if isinstance(obj, dict):
        return sum((float(v) if k == key else _find(v, key)) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_find(v, key) for v in obj)
    return 0.0


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def _index_corpus(os_client, corpus: Path) -> int:
    import opensearch_plugin as osp
    from distill.core.formats import read_corpus

    n_docs = len(read_corpus(corpus))
    if os_client.indices.exists(index=INDEX) and os_client.count(index=INDEX)["count"] == n_docs:
        return n_docs
    return osp.load_corpus(os_client, INDEX, corpus, recreate=True)


@command(__doc__)
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Exported model dir (model_card.json), served by `distilrank serve`.")
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=REPO.parent / "shared" / "data" / "beir-scifact", show_default=True)
@click.option("--windows", default="20,50", show_default=True)
@click.option("--max-queries", default=0, show_default=True, help="0 = every test query with qrels.")
@click.option("--size", default=100, show_default=True, help="Hits per search (evaluation depth).")
@click.option("--query-weight", default=0.0, show_default=True)
@click.option("--rescore-query-weight", default=1.0, show_default=True)
@click.option("--blend-alpha", default=0.75, show_default=True, type=float,
              help="Also run a BM25+ranker blend at window 20 with this first-stage weight (the pipeline's tuned a).")
@click.option("--threads", default=os.cpu_count() or 1, show_default=True)
@click.option("--port", default=9250, show_default=True, help="OpenSearch HTTP port for this bench's node.")
@click.option("--os-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Node root [default: $DISTILRANK_HOME/opensearch-bench].")
@click.option("--loadtest-users", default="1,2", show_default=True,
              help="After the quality runs: Locust `opensearch` scenario (window 20) at these user counts; '' = skip.")
@click.option("--loadtest-run-time", default="30s", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / "bench" / "results")
def main(model_dir: Path, data: Path, windows: str, max_queries: int, size: int, query_weight: float,
         rescore_query_weight: float, blend_alpha: float, threads: int, port: int, os_root: Path | None,
         loadtest_users: str, loadtest_run_time: str, out_dir: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import opensearch_plugin as osp
    from distill.core.formats import read_qrels, read_queries
    from distill.core.model_card import load_model_card
    from ranker.process import start_serve, stop_serve

    window_sizes = sorted({int(w) for w in windows.split(",")})
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
                    "size": size,
                    "query_weight": query_weight, "rescore_query_weight": rescore_query_weight,
                    "opensearch": osp.OPENSEARCH_VERSION, "cpu_count": os.cpu_count(), "threads": threads,
                    "loadavg_start": round(os.getloadavg()[0], 2), "windows": {}}
    try:
        client = osp.client(cfg.url, timeout=120)
        client.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoint": ranker_url,
                                                         "distilrank.ranker.read_timeout": "60s"}})
        report["documents"] = _index_corpus(client, data / "corpus.jsonl")
        score_fn = osp.ranker_score_fn(ranker_url, timeout=60)
        first_run, report["first_stage"] = _first_stage(client, queries, qrels, size)
        settings = [(f"rerank w{w}", w, query_weight, rescore_query_weight) for w in window_sizes]
        if blend_alpha:
            report["blend"] = _blend(first_run, blend_alpha)
            settings.append((f"blend a={blend_alpha} w20", 20, 1.0, report["blend"]["rescore_query_weight"]))
        for name, w, qw, rqw in settings:
            params = osp.RescoreParams(window_size=w, query_weight=qw, rescore_query_weight=rqw)
            report["windows"][name] = {"window": w, "query_weight": qw, "rescore_query_weight": rqw,
                                       **_rescore(client, queries, qrels, size, params, score_fn)}
            logger.info("%s: %s", name, report["windows"][name])
        report["loadtest"] = _loadtest(cfg.url, data, [int(u) for u in loadtest_users.split(",") if u.strip()],
                                       loadtest_run_time, Path(tempfile.mkdtemp(prefix="opensearch_loadtest_")))
    finally:
        stop_serve(proc)
        osp.stop(cfg)
    report["loadavg_end"] = round(os.getloadavg()[0], 2)
    md = _markdown(report)
    write_results(out_dir / "opensearch_scifact", report, md)
    click.echo(md)


def _first_stage(client, queries: dict, qrels: dict, size: int) -> tuple[dict[str, dict[str, float]], dict]:
    """The BM25 query alone for every query: its run, and its metrics and ``took`` percentiles."""
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
    return first_run, summary


def _blend(first_run: dict[str, dict[str, float]], alpha: float) -> dict:
    """OpenSearch weights for the BM25 + ranker blend, from the first stage alone (no test labels)."""
    # BM25 + ranker blend mirroring the pipeline's interpolation a*minmax(BM25) + (1-a)*logit: OpenSearch
    # cannot min-max per query, so BM25's spread is replaced by the median top-20 score range of
    # this first stage (label-free), and a logit by 4 x sigmoid (its slope at 0 is 1/4).
    ranges = [max(v) - min(v) for v in (sorted(d.values(), reverse=True)[:20] for d in first_run.values()) if v]
    spread = float(np.median(ranges))
    rqw = round(spread * 4 * (1 - alpha) / alpha, 3)
    return {"alpha": alpha, "bm25_top20_range_median": spread, "query_weight": 1.0, "rescore_query_weight": rqw}


def _rescore(client, queries: dict, qrels: dict, size: int, params, score_fn) -> dict:
    """Every query rescored by the plugin and, from the same first stage, client-side: metrics, the rescore
    step's latency (ms) and how far the two agree."""
    import opensearch_plugin as osp
    from distill.core.evaluation import evaluate

    def stats(key: str) -> float:
        return _find(client.transport.perform_request("GET", "/_plugins/distilrank/stats"), key)

    plugin_run: dict[str, dict[str, float]] = {}
    client_run: dict[str, dict[str, float]] = {}
    plugin_ms, took_delta, client_ms, same_top10, max_diff = [], [], [], 0, 0.0
    failures_before = stats("failures")
    for n, (qid, q) in enumerate(queries.items(), 1):
        before = stats("total_latency_ms")
        resp = client.search(index=INDEX, body=osp.search_body(q.text, size, params))
        plugin_ms.append(stats("total_latency_ms") - before)
        plugin_hits = [(h["_id"], float(h["_score"])) for h in resp["hits"]["hits"]]
        plugin_run[qid] = dict(plugin_hits)
        first = client.search(index=INDEX, body=osp.search_body(q.text, size))
        took_delta.append(float(resp["took"]) - float(first["took"]))
        t0 = time.perf_counter()
        client_hits = osp.rescore_hits(first["hits"]["hits"], q.text, params, score_fn)
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
    fs = r["first_stage"]["metrics"]
    lines = [f"SciFact test ({r['queries']} queries, {r['documents']} docs), OpenSearch {r['opensearch']} BM25 "
             f"(`multi_match` title+text, standard analyzer) + distilrank rescore with `{r['model_name']}` "
             f"({r['precision']}, max_seq_len {r['max_seq_len']}), score_mode total, served scores = sigmoid. "
             f"{r['cpu_count']} cores, shared by OpenSearch, the ranker and the client. Rescore step = the plugin's "
             "own ranker-call time (stats delta), resp. the client's /v1/rerank call.", "",
             "| system | setting | window | query_weight | rescore_query_weight | nDCG@10 | MRR@10 | R@100 "
             "| rescore step p50 ms | p95 ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| OpenSearch BM25 | - | - | - | - | {fs['ndcg@10']:.4f} | {fs['mrr@10']:.4f} | "
             f"{fs.get('recall@100', float('nan')):.4f} | - | - |"]
    for name, cell in r["windows"].items():
        for path, label in (("plugin", "BM25 + distilrank (plugin)"), ("client", "BM25 + distilrank (client-side)")):
            m = cell[path]["metrics"]
            lines.append(f"| {label} | {name} | {cell['window']} | {cell['query_weight']:g} | "
                         f"{cell['rescore_query_weight']:g} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                         f"{m.get('recall@100', float('nan')):.4f} | "
                         f"{cell[path]['rescore_p50_ms']:.0f} | {cell[path]['rescore_p95_ms']:.0f} |")
    lines += ["", "| setting | same top-10 order (plugin vs client) | max abs score diff "
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
