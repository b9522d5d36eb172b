"""Pipeline report vs OpenSearch: the report's blended run beside what the served model returns.

The report's ``student_interpolated`` run beside what ``distilrank serve --model OUT/serve`` and
``distilrank opensearch evaluate`` give on the same index:

    python -m bench opensearch_parity --run OUT --queries EVAL_QUERIES --qrels EVAL_QRELS

``OUT`` is a ``distilrank pipeline --first-stage opensearch`` output directory; the node and index are the
ones it used (``pipeline_config.json``'s ``first_stage.url``, the report's ``first_stage.index``; overridable).
What runs: the served model on 127.0.0.1 (``--scores card``), the node's plugin pointed at it (its previous
endpoints setting is put back afterwards),
then ``distilrank opensearch evaluate`` with no weight or mode flags, ``--size`` = the report's rerank depth
(the card's window) and ``--client-side``. Per eval query: is the served top 10 the pipeline's top 10 (plugin
and client-side)? And nDCG@10 of each path beside the report's. Writes OUT_DIR/opensearch_parity.{json,md}.
Exit 1 when the two disagree (a top 10 differs or nDCG@10 differs by more than ``--tolerance``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import click

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger(__name__)
PATHS = ("plugin_rescore", "client_rescore")


@command(__doc__)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A `distilrank pipeline --first-stage opensearch` output directory (report.json, serve/).")
@click.option("--queries", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The pipeline's --eval-queries.")
@click.option("--qrels", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The pipeline's --eval-qrels.")
@click.option("--opensearch-url", default=None, help="Node [default: the run's pipeline_config.json first_stage.url].")
@click.option("--index", "index_name", default=None, help="Index [default: the report's first_stage.index].")
@click.option("--threads", default=os.cpu_count() or 1)
@click.option("--tolerance", default=1e-3, help="Largest nDCG@10 difference that counts as equal.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / "bench" / "results")
def main(run_dir: Path, queries: Path, qrels: Path, opensearch_url: str | None, index_name: str | None,
         threads: int, tolerance: float, out_dir: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from distill.core.errors import ConfigError
    from distill.core.formats import read_run

    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    first_stage = report.get("first_stage") or {}
    config_fs = json.loads((run_dir / "pipeline_config.json").read_text(encoding="utf-8")).get("first_stage", {})
    url = opensearch_url or config_fs.get("url")
    index_name = index_name or first_stage.get("index")
    if first_stage.get("kind") != "opensearch" or not url or not index_name:
        raise ConfigError(f"{run_dir / 'report.json'}: first_stage is {first_stage}, not an OpenSearch index: the "
                          "parity holds for a pipeline run with --first-stage opensearch --opensearch-url U --index I")
    depth = int(report["rerank_depth"]["student"])
    pipeline_run = read_run(report["artifacts"]["runs"]["student_interpolated"])
    with tempfile.TemporaryDirectory(prefix="opensearch_parity_") as work:  # evaluate's runs: compared, not kept
        evaluated = _evaluate_served(Path(report["artifacts"]["serve"]), url, index_name, queries, qrels, depth,
                                     threads, Path(work))
    result = _compare(report, pipeline_run, evaluated, qrels, tolerance)
    result.update({"run_dir": str(run_dir), "opensearch_url": url, "index": index_name, "window": depth})
    md = _markdown(result)
    write_results(out_dir / "opensearch_parity", result, md)
    click.echo(md)
    return 0 if result["agree"] else 1


def _evaluate_served(serve_dir: Path, url: str, index_name: str, queries: Path, qrels: Path, depth: int,
                     threads: int, work: Path) -> dict:
    """``distilrank opensearch evaluate`` (plugin and client-side, no weight flags) against the served model."""
    import opensearch_plugin as osp
    from distill.cli import main as cli_main
    from distill.core.formats import read_run
    from ranker.process import start_serve, stop_serve

    client = osp.client(url, timeout=120)
    keys = ("distilrank.ranker.endpoints", "distilrank.ranker.read_timeout")
    before = client.cluster.get_settings(flat_settings=True).get("persistent", {})
    proc, ranker_url = start_serve(serve_dir, "--threads", str(threads), "--max-docs", "200", quiet=True, timeout=180)
    try:
        client.cluster.put_settings(body={"persistent": {keys[0]: [ranker_url], keys[1]: "60s"}})
        rc = cli_main(["opensearch", "evaluate", "--url", url, "--index", index_name, "--queries", str(queries),
                       "--qrels", str(qrels), "--out", str(work), "--ranker-url", ranker_url, "--size", str(depth),
                       "--client-side"])
        if rc:
            raise RuntimeError(f"distilrank opensearch evaluate exited {rc}")
    finally:
        try:
            stop_serve(proc)
        finally:
            client.cluster.put_settings(body={"persistent": {k: before.get(k) for k in keys}})
    applied = json.loads((work / "rescore.json").read_text(encoding="utf-8"))
    plugin, client_side = applied.get("plugin") or {}, applied.get("client_side") or {}
    if plugin.get("card_sha256") != client_side.get("card_sha256"):  # e.g. a transient endpoints setting wins
        raise RuntimeError(f"the plugin rescored with card {plugin.get('card_sha256')} ({plugin.get('source')}), not "
                           f"the served model's {client_side.get('card_sha256')}: check the node's "
                           "distilrank.ranker.endpoints (a transient setting overrides the persistent one)")
    return {"applied": applied, "runs": {name: read_run(work / f"{name}.trec") for name in PATHS}}


def _compare(report: dict, pipeline_run: dict, evaluated: dict, qrels: Path, tolerance: float) -> dict:
    from distill.core.evaluation import evaluate
    from distill.core.formats import read_qrels

    # the report's conventions: its eval queries (eval.max_queries may take a subset) and its self-hit rule
    all_qrels = read_qrels(qrels)
    qr = {q: all_qrels[q] for q in pipeline_run if q in all_qrels}
    if len(qr) != report.get("n_eval_queries", len(qr)):
        logger.warning("the pipeline run has %d judged queries, the report %s", len(qr), report.get("n_eval_queries"))
    ignore = bool(report.get("conventions", {}).get("ignore_identical_ids", False))
    reported = float(report["metrics"]["student_interpolated"]["ndcg@10"])
    ours = evaluate(qr, pipeline_run, ["ndcg@10"], ignore_identical_ids=ignore).metrics["ndcg@10"]
    paths = {}
    for name in PATHS:
        served = evaluated["runs"][name]
        differ = [qid for qid, docs in pipeline_run.items() if list(served.get(qid, {}))[:10] != list(docs)[:10]]
        ndcg = evaluate(qr, {q: served.get(q, {}) for q in pipeline_run}, ["ndcg@10"],
                        ignore_identical_ids=ignore).metrics["ndcg@10"]
        paths[name] = {"queries": len(pipeline_run), "same_top10": len(pipeline_run) - len(differ),
                       "differing_queries": differ[:20], "ndcg@10": ndcg, "ndcg@10_diff": ndcg - reported}
    plugin = evaluated["applied"].get("plugin") or {}
    agree = all(not p["differing_queries"] and abs(p["ndcg@10_diff"]) <= tolerance for p in paths.values())
    return {"reported_ndcg@10": reported, "pipeline_run_ndcg@10": ours, "paths": paths, "agree": agree,
            "tolerance": tolerance, "plugin_fallback": plugin.get("fallback"),
            "interpolation": plugin.get("interpolation"), "card_sha256": plugin.get("card_sha256")}


def _markdown(r: dict) -> str:
    lines = [f"Pipeline report vs OpenSearch ({r['opensearch_url']}, index `{r['index']}`, window {r['window']}, "
             f"the served card's interpolation, plugin fallback: {r['plugin_fallback']}): report nDCG@10 "
             f"{r['reported_ndcg@10']:.4f}. Agree (same top 10 on every query, nDCG@10 within {r['tolerance']}): "
             f"**{'yes' if r['agree'] else 'no'}**.", "",
             "| path | queries | same top 10 | nDCG@10 | diff vs report |", "|---|---:|---:|---:|---:|",
             f"| pipeline `student_interpolated` run | {r['paths']['plugin_rescore']['queries']} | - | "
             f"{r['pipeline_run_ndcg@10']:.4f} | {r['pipeline_run_ndcg@10'] - r['reported_ndcg@10']:+.4f} |"]
    for name, p in r["paths"].items():
        lines.append(f"| `opensearch evaluate` {name} | {p['queries']} | {p['same_top10']} | {p['ndcg@10']:.4f} | "
                     f"{p['ndcg@10_diff']:+.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bench import run

    run(main)
