"""``distilrank opensearch ...``: install/start/stop/status a local node, build the plugin, index, evaluate."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import click

from distill.core.bm25 import B_RANGE, K1_RANGE
from distill.core.errors import MissingPrerequisiteError
from distill.core.params import Count, FiniteFloat

from ._build import build_plugin
from ._first_stage import MAX_TOP_K, retrieve_to_file
from ._index import DEFAULT_ANALYZER, DEFAULT_B, DEFAULT_K1, client, create_index, load_corpus, run_queries
from ._node import DEFAULT_HEAP, DEFAULT_PORT, NodeConfig, install, start, status, stop
from ._rescore import SCORE_MODES, RescoreParams, rescore_clause

logger = logging.getLogger(__name__)

_port = click.option("--port", default=DEFAULT_PORT, show_default=True, help="HTTP port on 127.0.0.1.")
_url = click.option("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True, help="OpenSearch URL.")
_analyzer = click.option("--analyzer", default=DEFAULT_ANALYZER, show_default=True,
                         help="Analyzer of title and text in a new index: english (stemming; needs analysis-common, "
                              "which `install` adds) or any analyzer the node has, e.g. standard.")
_shards = click.option("--shards", default=1, show_default=True, type=Count(min=1, max=1024),
                       help="Primary shards of a new index (the plugin rescores each shard's window).")
_ranker_urls = click.option("--ranker-url", "ranker_urls", multiple=True, default=("http://127.0.0.1:8080",),
                            show_default=True, help="Ranker (repeat for replicas: round robin and failover).")


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
@_url
@_analyzer
@_shards
@click.option("--k1", default=DEFAULT_K1, show_default=True, type=FiniteFloat(*K1_RANGE), help="BM25 k1.")
@click.option("--b", default=DEFAULT_B, show_default=True, type=FiniteFloat(*B_RANGE), help="BM25 b.")
@click.option("--recreate", is_flag=True)
def index_cmd(corpus: Path, index_name: str, url: str, analyzer: str, shards: int, k1: float, b: float,
              recreate: bool) -> None:
    """Create the index and bulk-load a BEIR-style corpus."""
    os_client = client(url)
    create_index(os_client, index_name, shards=shards, recreate=recreate, analyzer=analyzer, k1=k1, b=b)
    click.echo(load_corpus(os_client, index_name, corpus))


def _rescore_options(f):  # noqa: ANN001, ANN202 - a click decorator
    """The clause's values; each one left out comes from the served model's card (the ranker's GET /info)."""
    options = [
        click.option("--window-size", type=Count(min=1, max=MAX_TOP_K), default=None,
                     help="Hits per shard sent to the ranker [default: the card's interpolation depth]."),
        click.option("--score-mode", type=click.Choice(SCORE_MODES), default="interpolate", show_default=True),
        click.option("--first-stage-weight", type=FiniteFloat(0.0, 1.0), default=None,
                     help="interpolate: weight of the normalised first stage [default: the card's]."),
        click.option("--first-stage-norm", type=click.Choice(["minmax", "zscore", "none"]), default=None,
                     help="interpolate [default: the card's]."),
        click.option("--ranker-norm", type=click.Choice(["minmax", "zscore", "none"]), default=None,
                     help="interpolate [default: the card's]."),
        click.option("--query-weight", type=FiniteFloat(), default=None,
                     help="total/multiply/avg/max/min only [default: 1]."),
        click.option("--rescore-query-weight", type=FiniteFloat(), default=None,
                     help="total/multiply/avg/max/min only [default: 1]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _params(window_size: int | None, score_mode: str, first_stage_weight: float | None, first_stage_norm: str | None,
            ranker_norm: str | None, query_weight: float | None, rescore_query_weight: float | None,
            fields: tuple[str, ...] = ("title", "text")) -> RescoreParams:
    return RescoreParams(window_size=window_size, fields=fields, score_mode=score_mode,  # type: ignore[arg-type]
                         first_stage_weight=first_stage_weight,
                         first_stage_norm=first_stage_norm,  # type: ignore[arg-type]
                         ranker_norm=ranker_norm,  # type: ignore[arg-type]
                         query_weight=query_weight, rescore_query_weight=rescore_query_weight)


@opensearch.command("evaluate")
@click.option("--index", "index_name", required=True)
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--qrels", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@_url
@_ranker_urls
@_rescore_options
@click.option("--size", default=100, show_default=True, type=Count(min=1, max=MAX_TOP_K))
@click.option("--client-side", is_flag=True, help="Also rescore in Python (for clusters without the plugin).")
@click.option("--no-plugin", is_flag=True, help="Skip the plugin path.")
def evaluate_cmd(index_name: str, queries: Path, qrels: Path, out_dir: Path, url: str, ranker_urls: tuple[str, ...],
                 size: int, client_side: bool, no_plugin: bool, **clause: object) -> None:
    """First stage vs rescored metrics; writes TREC runs, metrics.json, metrics.md and rescore.json into --out.

    With no weight or mode flags both paths apply the served model's interpolation (its card, read from the
    ranker's GET /info: the plugin from its distilrank.ranker.endpoint(s), --client-side from --ranker-url).
    """
    from distill.core.evaluation import evaluate, write_reports
    from distill.core.formats import read_qrels, read_queries, write_run

    from ._ranker_pool import RankerPool

    params = _params(**clause)  # type: ignore[arg-type]
    qr = read_qrels(qrels)
    qs = {qid: q for qid, q in read_queries(queries).items() if qid in qr}
    os_client = client(url)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {"first_stage": run_queries(os_client, index_name, qs, size=size)}
    if not no_plugin:
        runs["plugin_rescore"] = run_queries(os_client, index_name, qs, size=size, params=params)
    applied: dict[str, object] = {"clause": rescore_clause("QUERY", params)["distilrank"],
                                  "window_size": params.window_size,
                                  "plugin": None if no_plugin else _plugin_model(os_client)}
    if client_side:
        with RankerPool(ranker_urls) as pool:
            runs["client_rescore"] = run_queries(os_client, index_name, qs, size=size, params=params, client_side=pool)
            applied["client_side"] = pool.stats()["model"]
    _check_same_card(applied)
    results = {}
    for name, run in runs.items():
        write_run(out_dir / f"{name}.trec", run, tag=name)
        results[name] = evaluate(qr, run).metrics
    write_reports(results, str(out_dir / "metrics.json"), str(out_dir / "metrics.md"), None, single=False)
    (out_dir / "rescore.json").write_text(json.dumps(applied, indent=2) + "\n")
    click.echo((out_dir / "metrics.md").read_text())


def _plugin_model(os_client) -> object:
    """The card defaults the plugin used (its stats' ``model``), after the searches above."""
    try:
        return os_client.transport.perform_request("GET", "/_plugins/distilrank/stats").get("model")
    except Exception as exc:  # noqa: BLE001 - informational only
        logger.warning("could not read /_plugins/distilrank/stats: %s", exc)
        return None


def _check_same_card(applied: Mapping[str, object]) -> None:
    plugin, client_side = applied.get("plugin"), applied.get("client_side")
    if isinstance(plugin, Mapping) and isinstance(client_side, Mapping) \
            and plugin.get("card_sha256") != client_side.get("card_sha256"):
        logger.warning("the plugin's ranker (%s, card %s) and --ranker-url (%s, card %s) serve different models: the "
                       "two rescored runs are not comparable", plugin.get("source"), plugin.get("card_sha256"),
                       client_side.get("source"), client_side.get("card_sha256"))


@opensearch.command("rescore-clause")
@_ranker_urls
@_rescore_options
@click.option("--query-text", default="QUERY TEXT", show_default=True, help="Put the user's query here.")
@click.option("--fields", default="title,text", show_default=True, help="Comma-separated _source fields.")
@click.option("--minimal", is_flag=True, help="Leave the card's values out: the plugin fills them in at search time.")
def rescore_clause_cmd(ranker_urls: tuple[str, ...], query_text: str, fields: str, minimal: bool,
                       **clause: object) -> None:
    """Print the `rescore` element to paste into a search body, with the served model's values spelled out.

    The values come from the ranker's GET /info (the model card's interpolation, or the documented fallback for
    an older export); flags override them. Prints to stdout as JSON; the endpoint setting goes to stderr.
    """
    from ._ranker_pool import RankerError, RankerPool

    params = _params(**clause, fields=tuple(f for f in fields.split(",") if f))  # type: ignore[arg-type]
    if not minimal:
        with RankerPool(ranker_urls) as pool:
            try:
                params = params.resolved(pool.model_defaults())
            except RankerError as exc:
                raise MissingPrerequisiteError(f"cannot read the model card's defaults: {exc}") from exc
    click.echo(json.dumps({"rescore": rescore_clause(query_text, params)}, indent=2))
    setting = {"persistent": {"distilrank.ranker.endpoints": list(ranker_urls)}}
    click.echo(f"# node setting: PUT _cluster/settings {json.dumps(setting)}", err=True)


@click.command("opensearch")
@_url
@click.option("--index", "index_name", required=True, help="Index to search (built from --corpus when given).")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Queries TSV or BEIR JSONL (.gz/.bz2 ok).")
@click.option("--top-k", default=100, show_default=True, type=Count(min=1, max=MAX_TOP_K), help="Hits per query.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="TREC run to write (atomically; .gz compresses).")
@click.option("--corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Build the index from this corpus first, or reuse it when it was built from the same file.")
@_analyzer
@_shards
@click.option("--fields", default="title,text", show_default=True, help="Comma-separated fields searched (BM25).")
def retrieve_opensearch(url: str, index_name: str, queries: Path, top_k: int, out: Path, corpus: Path | None,
                        analyzer: str, shards: int, fields: str) -> None:
    """BM25 from an OpenSearch index (multi_match over title and text), the engine that will serve."""
    path = retrieve_to_file(url, index_name, queries, top_k, out, corpus=corpus, analyzer=analyzer, shards=shards,
                            fields=tuple(f for f in fields.split(",") if f))
    click.echo(path)
