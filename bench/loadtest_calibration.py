"""Calibrate the default load-test SLOs with headless Locust runs against distilrank serve.

Real runs of ``loadtests.run_loadtest`` for 1 query x P passages (P = 20, 50) at U closed-loop users
(U = 1, 2, 4 by default), payloads = scifact_mini test queries with their BM25 top-P texts.

    nice -n 10 python -m bench loadtest_calibration --model EXPORTED_DIR [--users 1,2,4,8] [--run-time 40s]

Without --model it builds the same stand-in as bench.ranker_bench (all-MiniLM-L6-v2 + an untrained
seeded 1-logit head, fp32 ONNX): the compute of the small student, meaningless scores.

"Highest throughput before p95 degrades" = the most requests/s among the user counts whose p95 stays
within ``--degrade-factor`` x the 1-user p95 (closed-loop users: once the CPU is saturated, more users
only queue, so p95 grows while requests/s stays flat). Writes OUT/loadtest_calibration[_TAG].{json,md,png};
each cell's Locust CSV/HTML/JSON/PNG stay under --work. Current figures: docs/results.md, "Load-test calibration".
The machine is shared and noisy: compare cells of the same run, not absolute numbers across runs.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
from pathlib import Path

import click

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger(__name__)


def knee(cells: list[dict[str, float]], factor: float) -> dict[str, float] | None:
    """The cell with the most requests/s among those whose p95 <= factor x the fewest-users cell's p95."""
    ok = [c for c in cells if c["p95_ms"] is not None and c["failures"] == 0]
    if not ok:
        return None
    base = min(ok, key=lambda c: c["users"])["p95_ms"]
    within = [c for c in ok if c["p95_ms"] <= factor * base]
    return max(within, key=lambda c: c["rps"])


def markdown(report: dict) -> str:
    lines = [f"Model `{report['model_name']}` ({report['precision']}, max_seq_len {report['max_seq_len']}), "
             f"`distilrank serve --threads {report['threads']} {'--spin' if report['spin'] else '--no-spin'}`, "
             f"Locust {report['locust_version']} closed-loop users, {report['run_time']} per cell, "
             f"{report['cpu_count']} cores, load average at start {report['loadavg_start']}. "
             "Shared, noisy machine: compare cells of this run, not absolute ms across runs.", "",
             "| passages | users | requests | failures | p50 ms | p95 ms | p99 ms | req/s | pairs/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    for c in report["cells"]:
        lines.append(f"| {c['passages']} | {c['users']} | {c['requests']} | {c['failures']} | {ms(c['p50_ms'])} | "
                     f"{ms(c['p95_ms'])} | {ms(c['p99_ms'])} | {c['rps']:.2f} | {c['rps'] * c['passages']:.1f} |")
    lines += ["", f"Highest throughput before p95 degrades (p95 <= {report['degrade_factor']}x the 1-user p95):", ""]
    for p, k in report["knee"].items():
        lines.append(f"- {p} passages: " + ("no valid cell" if k is None else
                     f"{k['rps']:.2f} req/s ({k['rps'] * int(p):.1f} pairs/s) at {k['users']} user(s), "
                     f"p95 {k['p95_ms']:.0f} ms"))
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for p in report["passages"]:
        cells = [c for c in report["cells"] if c["passages"] == p]
        users = [c["users"] for c in cells]
        p95 = [c["p95_ms"] if c["p95_ms"] is not None else float("nan") for c in cells]
        ax1.plot(users, p95, marker="o", label=f"{p} passages")
        ax2.plot(users, [c["rps"] for c in cells], marker="o", label=f"{p} passages")
    ax1.set(xlabel="concurrent users", ylabel="p95 latency (ms)", title="p95 vs users")
    ax2.set(xlabel="concurrent users", ylabel="requests/s", title="throughput vs users")
    for ax in (ax1, ax2):
        ax.set_xticks(report["users"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@command(__doc__)
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Exported dir (model_card.json) [default: build the MiniLM-L6 stand-in].")
@click.option("--users", default="1,2,4", show_default=True, help="Comma-separated user counts.")
@click.option("--passages", default="20,50", show_default=True, help="Comma-separated passages per request.")
@click.option("--run-time", default="30s", show_default=True, help="Locust duration per cell.")
@click.option("--threads", default=os.cpu_count() or 1, show_default=True, type=click.IntRange(min=1))
@click.option("--spin/--no-spin", default=False, show_default=True,
              help="ORT busy-wait threads (off on a shared machine).")
@click.option("--degrade-factor", default=1.5, show_default=True, type=click.FloatRange(min=1.0))
@click.option("--max-seq-len", default=256, show_default=True, help="Only for the stand-in export.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where each cell's Locust output goes [default: a temp dir].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=REPO / "bench" / "results")
@click.option("--tag", default="", help="Suffix: loadtest_calibration_TAG.{json,md,png}.")
def main(model_dir: Path | None, users: str, passages: str, run_time: str, threads: int, spin: bool,
         degrade_factor: float, max_seq_len: int, work: Path | None, out_dir: Path, tag: str) -> None:
    # never import locust here: it monkey-patches this process with gevent (Locust runs in subprocesses)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from importlib.metadata import version

    from distill.core.errors import GateFailedError
    from loadtests import LoadTestConfig, build_payloads, run_loadtest
    from ranker.process import start_serve, stop_serve

    user_counts = sorted({int(u) for u in users.split(",")})
    passage_counts = sorted({int(p) for p in passages.split(",")})
    work = Path(work or tempfile.mkdtemp(prefix="loadtest_calibration_"))
    work.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        from bench.ranker_bench import stand_in_export

        model_dir, _ = stand_in_export(work, max_seq_len)
    from distill.core.model_card import load_model_card

    card = load_model_card(model_dir, verify=False)
    # measure only: every limit absent, so the hook only insists that requests were made
    slo = work / "measure_only.json"
    slo.write_text(json.dumps({"scenario": "ranker", "description": "calibration: measure only"}))
    report: dict = {"model_dir": str(model_dir), "model_name": card.display_name(model_dir),
                    "precision": card.precision, "max_seq_len": card.max_seq_len, "threads": threads,
                    "spin": spin, "run_time": run_time, "users": user_counts, "passages": passage_counts,
                    "degrade_factor": degrade_factor, "locust_version": version("locust"), "cpu_count": os.cpu_count(),
                    "platform": platform.platform(), "loadavg_start": round(os.getloadavg()[0], 2), "cells": []}
    proc, url = start_serve(model_dir, "--threads", str(threads), "--max-docs", "200",
                            "--spin" if spin else "--no-spin", quiet=True, timeout=180)
    try:
        for p in passage_counts:
            payloads = build_payloads(work / f"payloads_{p}.json", p)
            for u in user_counts:
                cell_out = work / f"p{p}_u{u}"
                cfg = LoadTestConfig(scenario="ranker", host=url, users=u, spawn_rate=u, run_time=run_time,
                                     slo=slo, passages=p, out=cell_out)
                try:
                    result = run_loadtest(cfg, payloads)
                except GateFailedError as exc:
                    logger.error("cell %d passages x %d users made no request: %s", p, u, exc)
                    result = json.loads((cell_out / "slo_result.json").read_text(encoding="utf-8"))
                m = result["measured"]["total"]
                report["cells"].append({"passages": p, "users": u, "requests": m["requests"],
                                        "failures": m["failures"], "p50_ms": m["p50_ms"], "p95_ms": m["p95_ms"],
                                        "p99_ms": m["p99_ms"], "rps": m["rps"], "locust_out": str(cell_out)})
                logger.info("%d passages x %d users: %s", p, u, report["cells"][-1])
    finally:
        stop_serve(proc)
    report["loadavg_end"] = round(os.getloadavg()[0], 2)
    report["knee"] = {str(p): knee([c for c in report["cells"] if c["passages"] == p], degrade_factor)
                      for p in passage_counts}
    stem = "loadtest_calibration" + (f"_{tag}" if tag else "")
    write_results(out_dir / stem, report, markdown(report))
    plot(report, out_dir / f"{stem}.png")
    click.echo(markdown(report))


if __name__ == "__main__":
    from bench import run

    run(main)
