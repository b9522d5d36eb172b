"""Two ranker replicas behind the plugin under a Locust `opensearch` run; one is killed mid-run.

Starts two `distilrank serve` replicas of one export on 127.0.0.1, points the plugin at both
(`distilrank.ranker.endpoints`, round robin, a breaker per replica), indexes the bundled corpus, and runs
`distilrank loadtest --scenario opensearch` for `--run-time`; after `--kill-after` seconds one replica is killed
(SIGKILL: no drain). Reports the searches Locust made and their errors, and from the plugin's stats how many
rescores failed over to the other replica and how many fell open (first-stage order returned) during the switch.
The node must be running (`distilrank opensearch install && distilrank opensearch start`).

    python -m bench replica_failover --model OUT/serve [--users 2 --run-time 40 --kill-after 15]

Writes OUT/replica_failover.{json,md}; current figures: docs/results.md, "Ranker replicas and failover".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
INDEX = "distilrank-replicas"


def _stats(client) -> dict[str, object]:  # noqa: ANN001
    return client.transport.perform_request("GET", "/_plugins/distilrank/stats")


def _loadtest(url: str, users: int, run_time: int, window: int, out: Path) -> subprocess.Popen[str]:
    slo = out / "measure_only.json"
    slo.write_text(json.dumps({"scenario": "opensearch", "description": "measure only"}))
    return subprocess.Popen([sys.executable, "-m", "distill.cli", "loadtest", "--scenario", "opensearch", "--host",
                             url, "--index", INDEX, "--users", str(users), "--spawn-rate", str(users), "--run-time",
                             f"{run_time}s", "--passages", str(window), "--slo", str(slo), "--out", str(out / "lt")],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _measured(out: Path) -> dict[str, object]:
    result = json.loads((out / "lt" / "slo_result.json").read_text())
    return result["measured"]["POST /_search+rescore"]


def _run(model: Path, url: str, users: int, run_time: int, kill_after: int, window: int) -> dict[str, object]:
    import opensearch_plugin as osp
    from distill.core.datasets import bundled_dataset
    from ranker.process import start_serve, stop_serve

    client = osp.client(url)
    osp.ensure_index(url, INDEX, bundled_dataset().corpus)
    (proc_a, url_a), (proc_b, url_b) = (start_serve(model, "--threads", "1", timeout=120) for _ in range(2))
    work = Path(tempfile.mkdtemp(prefix="replica_failover_"))
    try:
        client.cluster.put_settings(body={"persistent": {
            "distilrank.ranker.endpoints": [url_a, url_b], "distilrank.breaker.failure_threshold": 2,
            "distilrank.breaker.open_duration": "300s"}})
        before = _stats(client)
        locust = _loadtest(url, users, run_time, window, work)
        killer = threading.Timer(kill_after, proc_a.kill)
        killer.start()
        log, _ = locust.communicate(timeout=run_time + 300)
        killer.join()
        if locust.returncode != 0:
            raise RuntimeError(f"loadtest exited {locust.returncode}:\n{log[-3000:]}")
        after = _stats(client)
    finally:
        client.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoints": None,
                                                         "distilrank.breaker.*": None}})
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                stop_serve(proc)
    return _result(before, after, _measured(work), url_a, users, run_time, kill_after, window, model)


def _result(before: dict, after: dict, measured: dict, killed: str, users: int, run_time: int,  # noqa: PLR0913
            kill_after: int, window: int, model: Path) -> dict[str, object]:
    def delta(key: str) -> int:
        return int(after[key]) - int(before[key])  # type: ignore[call-overload]

    dead = next(e for e in after["endpoints"] if e["url"] == killed)  # type: ignore[attr-defined]
    return {"model": str(model), "users": users, "run_time_s": run_time, "killed_after_s": kill_after,
            "window": window, "searches": measured.get("requests"), "search_errors": measured.get("failures"),
            "p50_ms": measured.get("p50_ms"), "p95_ms": measured.get("p95_ms"),
            "rescores": delta("requests"), "failed_over": delta("failovers"), "fell_open": delta("failures"),
            "killed_replica": {"breaker_open": dead.get("breaker_open"),
                               "failures_by_kind": dead.get("failures_by_kind")}}


def _markdown(r: dict[str, object]) -> str:
    return "\n".join([
        "# Ranker replicas and failover", "",
        f"Two replicas of `{r['model']}` behind the plugin, {r['users']} Locust users for {r['run_time_s']} s, "
        f"window {r['window']}; one replica killed (SIGKILL) after {r['killed_after_s']} s.", "",
        "| searches | search errors | rescores | failed over | fell open | killed replica's breaker open | p50 ms | "
        "p95 ms |", "|---:|---:|---:|---:|---:|---|---:|---:|",
        f"| {r['searches']} | {r['search_errors']} | {r['rescores']} | {r['failed_over']} | {r['fell_open']} | "
        f"{r['killed_replica']['breaker_open']} | {r['p50_ms']} | {r['p95_ms']} |", ""])  # type: ignore[index]


@command(__doc__)
@click.option("--model", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="an export dir (OUT/serve of a pipeline, or distilrank export --out)")
@click.option("--url", default="http://127.0.0.1:9200", show_default=True, help="the running OpenSearch node")
@click.option("--users", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--run-time", default=40, show_default=True, type=click.IntRange(min=5), help="seconds")
@click.option("--kill-after", default=15, show_default=True, type=click.IntRange(min=1), help="seconds")
@click.option("--window", default=20, show_default=True, type=click.IntRange(min=1), help="passages per search")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results", show_default=True)
def main(model: Path, url: str, users: int, run_time: int, kill_after: int, window: int, out: Path) -> None:
    if kill_after >= run_time:
        raise click.UsageError("--kill-after must be shorter than --run-time")
    result = _run(model, url, users, run_time, kill_after, window)
    path = write_results(out / "replica_failover", result, _markdown(result))
    click.echo(_markdown(result))
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    from bench import run

    run(main)
