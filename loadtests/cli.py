"""``distilrank loadtest``: a headless Locust run whose exit code reflects the SLOs."""

from __future__ import annotations

import logging
from pathlib import Path

import click

__all__ = ["loadtest"]

logger = logging.getLogger(__name__)


@click.command("loadtest")
@click.option("--scenario", type=click.Choice(["ranker", "opensearch"]), required=True)
@click.option("--host", default=None,
              help="Base URL [default: http://127.0.0.1:8080 for ranker, :9200 for opensearch].")
@click.option("--users", default=1, show_default=True, type=click.IntRange(min=1), help="Concurrent closed-loop users.")
@click.option("--spawn-rate", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Users started per second.")
@click.option("--run-time", default="30s", show_default=True, help="Locust duration, e.g. 20s, 2m.")
@click.option("--slo", type=click.Path(dir_okay=False, path_type=Path),
              help="SLO JSON [default: loadtests/slo/<scenario>.json].")
@click.option("--passages", default=20, show_default=True, type=click.IntRange(min=1),
              help="Documents per rerank request / OpenSearch rescore window.")
@click.option("--corpus", type=click.Path(dir_okay=False), help="Corpus for payloads [default: bundled scifact_mini].")
@click.option("--queries", type=click.Path(dir_okay=False),
              help="Queries for payloads [default: bundled scifact_mini test].")
@click.option("--index", default="distilrank", show_default=True, help="OpenSearch index (opensearch scenario).")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Locust worker processes (a distributed master/worker run when > 1).")
@click.option("--out", default="runs/loadtest", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def loadtest(scenario: str, host: str | None, users: int, spawn_rate: float, run_time: str, slo: Path | None,
             passages: int, corpus: str | None, queries: str | None, index: str, processes: int, out: Path) -> None:
    """Run Locust headless against HOST; write CSV, HTML, JSON, summary.md and latency.png to OUT.

    \b
    Exit codes: 0 every SLO met, 2 bad arguments, 3 target not reachable, 4 malformed SLO file,
    5 an SLO threshold missed (each violation is printed with its limit and measured value).
    """
    from loadtests.payloads import build_payloads
    from loadtests.runner import LoadTestConfig, load_scenario_slo, run_loadtest

    host = host or ("http://127.0.0.1:8080" if scenario == "ranker" else "http://127.0.0.1:9200")
    cfg = LoadTestConfig(scenario=scenario, host=host, users=users, spawn_rate=spawn_rate,  # type: ignore[arg-type]
                         run_time=run_time, slo=slo, passages=passages, out=out, processes=processes, index=index)
    load_scenario_slo(cfg)  # a malformed SLO file fails before payloads are built or traffic is sent
    payloads = build_payloads(out / "payloads.json", passages, corpus, queries)
    result = run_loadtest(cfg, payloads)
    click.echo((out / "summary.md").read_text(encoding="utf-8"), nl=False)
    logger.info("results in %s (passed=%s)", out, result["passed"])
