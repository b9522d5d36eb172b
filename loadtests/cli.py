"""``distilrank loadtest``: a headless Locust run whose exit code reflects the SLOs."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["loadtest"]


@click.command("loadtest")
@click.option("--scenario", type=click.Choice(["ranker", "opensearch"]), required=True)
@click.option("--host", default=None, help="Base URL (default http://127.0.0.1:8080 for ranker, :9200 for opensearch).")
@click.option("--users", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--spawn-rate", default=1.0, show_default=True, type=click.FloatRange(min=0.01))
@click.option("--run-time", default="30s", show_default=True, help="Locust duration, e.g. 20s, 2m.")
@click.option("--slo", type=click.Path(dir_okay=False, path_type=Path), help="SLO JSON (default loadtests/slo/<scenario>.json).")
@click.option("--passages", default=20, show_default=True, type=click.IntRange(min=1), help="Documents per rerank request / rescore window.")
@click.option("--corpus", type=click.Path(dir_okay=False), help="Corpus for payloads (default: bundled scifact_mini).")
@click.option("--queries", type=click.Path(dir_okay=False), help="Queries for payloads (default: bundled scifact_mini test).")
@click.option("--index", default="distilrank", show_default=True, help="OpenSearch index (opensearch scenario).")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1), help="Locust worker processes (distributed run).")
@click.option("--out", default="runs/loadtest", show_default=True, type=click.Path(file_okay=False, path_type=Path))
def loadtest(scenario: str, host: str | None, users: int, spawn_rate: float, run_time: str, slo: Path | None,
             passages: int, corpus: str | None, queries: str | None, index: str, processes: int, out: Path) -> None:
    """Run Locust headless; write CSV, HTML, JSON and latency.png to OUT; exit 5 if an SLO is missed."""
    from loadtests.payloads import build_payloads
    from loadtests.runner import DEFAULT_SLO, LoadTestConfig, run_loadtest
    from loadtests.slo import load_slo

    load_slo(slo or DEFAULT_SLO[scenario])  # a malformed SLO file fails before payloads are built
    host = host or ("http://127.0.0.1:8080" if scenario == "ranker" else "http://127.0.0.1:9200")
    out.mkdir(parents=True, exist_ok=True)
    payloads = build_payloads(out / "payloads.json", passages, corpus, queries)
    cfg = LoadTestConfig(scenario=scenario, host=host, users=users, spawn_rate=spawn_rate, run_time=run_time, slo=slo,
                         passages=passages, out=out, processes=processes, index=index)
    result = run_loadtest(cfg, payloads)
    click.echo(json.dumps(result["measured"]["total"], indent=2))
