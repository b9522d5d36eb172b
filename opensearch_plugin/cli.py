"""``distilrank opensearch ...``: install/start/stop/status a local node, build the plugin, index, evaluate."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from ._build import build_plugin
from ._index import client, load_corpus, run_queries
from ._node import DEFAULT_HEAP, DEFAULT_PORT, NodeConfig, install, start, status, stop
from ._rescore import SCORE_MODES, RescoreParams, ranker_score_fn

logger = logging.getLogger(__name__)

_port = click.option("--port", default=DEFAULT_PORT, show_default=True, help="HTTP port on 127.0.0.1.")


@click.group("opensearch")
def opensearch() -> None:
    """A local OpenSearch node with the distilrank rescorer, and evaluation through it."""


@opensearch.command("build-plugin")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The plugin's Maven project (default: opensearch_plugin/java of this source checkout).")
def build_plugin_cmd(source: Path | None) -> None:
    """Build the plugin zip with Maven from a source checkout; prints its path."""
    click.echo(build_plugin(source=source))


@opensearch.command("install")
@_port
@click.option("--heap", default=DEFAULT_HEAP, show_default=True)
@click.option("--plugin", "plugin_zip", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Plugin zip to install (default: build it, which needs a source checkout).")
@click.option("--no-plugin", is_flag=True, help="Install OpenSearch only.")
def install_cmd(port: int, heap: str, plugin_zip: Path | None, no_plugin: bool) -> None:
    """Fetch OpenSearch from Maven Central, configure a single node, install the plugin."""
    cfg = NodeConfig(port=port, heap=heap)
    if not no_plugin and plugin_zip is None:
        plugin_zip = build_plugin()
    click.echo(install(cfg, None if no_plugin else plugin_zip))


@opensearch.command("start")
@_port
def start_cmd(port: int) -> None:
    """Start the installed node (as user distilrank when root) and wait for green."""
    click.echo(start(NodeConfig(port=port)))


@opensearch.command("stop")
@_port
def stop_cmd(port: int) -> None:
    """Stop the node started by `start`."""
    click.echo("stopped" if stop(NodeConfig(port=port)) else "not running")


@opensearch.command("status")
@_port
def status_cmd(port: int) -> None:
    """Installed/running/health/plugins as JSON."""
    click.echo(json.dumps(status(NodeConfig(port=port)), indent=2))


@opensearch.command("index")
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--index", "index_name", required=True)
@click.option("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True)
@click.option("--recreate", is_flag=True)
def index_cmd(corpus: Path, index_name: str, url: str, recreate: bool) -> None:
    """Create the index and bulk-load a BEIR-style corpus."""
    click.echo(load_corpus(client(url), index_name, corpus, recreate=recreate))


@opensearch.command("evaluate")
@click.option("--index", "index_name", required=True)
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--qrels", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True)
@click.option("--ranker-url", default="http://127.0.0.1:8080", show_default=True,
              help="Ranker for --client-side rescoring (the plugin uses distilrank.ranker.endpoint).")
@click.option("--window-size", default=50, show_default=True)
@click.option("--size", default=100, show_default=True)
@click.option("--score-mode", type=click.Choice(SCORE_MODES), default="total", show_default=True)
@click.option("--query-weight", default=1.0, show_default=True)
@click.option("--rescore-query-weight", default=1.0, show_default=True)
@click.option("--client-side", is_flag=True, help="Also rescore in Python (for clusters without the plugin).")
@click.option("--no-plugin", is_flag=True, help="Skip the plugin path.")
def evaluate_cmd(index_name: str, queries: Path, qrels: Path, out_dir: Path, url: str, ranker_url: str,
                 window_size: int, size: int, score_mode: str, query_weight: float, rescore_query_weight: float,
                 client_side: bool, no_plugin: bool) -> None:
    """First stage vs rescored metrics; writes TREC runs, metrics.json and metrics.md into --out."""
    from distill.core.formats import read_qrels, read_queries, write_run
    from distill.core.evaluation import evaluate, write_reports

    params = RescoreParams(window_size=window_size, query_weight=query_weight,
                           rescore_query_weight=rescore_query_weight, score_mode=score_mode)  # type: ignore[arg-type]
    qs = read_queries(queries)
    qr = read_qrels(qrels)
    qs = {qid: q for qid, q in qs.items() if qid in qr}
    os_client = client(url)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {"first_stage": run_queries(os_client, index_name, qs, size=size)}
    if not no_plugin:
        runs["plugin_rescore"] = run_queries(os_client, index_name, qs, size=size, params=params)
    if client_side:
        score_fn = ranker_score_fn(ranker_url)
        runs["client_rescore"] = run_queries(os_client, index_name, qs, size=size, params=params, client_side=score_fn)
    results = {}
    for name, run in runs.items():
        write_run(out_dir / f"{name}.trec", run, tag=name)
        results[name] = evaluate(qr, run).metrics
    write_reports(results, str(out_dir / "metrics.json"), str(out_dir / "metrics.md"), None, single=False)
    click.echo((out_dir / "metrics.md").read_text())
