"""Run a Locust scenario headless as a subprocess and collect its results."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from distill._io import atomic_write
from distill.errors import DistilrankError, GateFailedError
from loadtests.slo import load_slo

__all__ = ["LoadTestConfig", "plot_latency", "run_loadtest"]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
LOCUSTFILES = {"ranker": _HERE / "locustfile_ranker.py", "opensearch": _HERE / "locustfile_opensearch.py"}
DEFAULT_SLO = {"ranker": _HERE / "slo" / "ranker.json", "opensearch": _HERE / "slo" / "opensearch.json"}


@dataclass(frozen=True)
class LoadTestConfig:
    scenario: str
    host: str
    users: int = 1
    spawn_rate: float = 1.0
    run_time: str = "30s"
    slo: Path | None = None
    passages: int = 20
    out: Path = Path("runs/loadtest")
    processes: int = 1
    index: str = "distilrank"


def plot_latency(history_csv: Path, out_png: Path) -> Path | None:
    """Latency percentiles and throughput over time from Locust's ``_stats_history.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in csv.DictReader(open(history_csv, encoding="utf-8")) if r.get("Name") == "Aggregated"]
    rows = [r for r in rows if r.get("95%") not in (None, "", "N/A")]
    if not rows:
        return None
    t0 = int(rows[0]["Timestamp"])
    t = [int(r["Timestamp"]) - t0 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for col in ("50%", "95%", "99%"):
        ax.plot(t, [float(r[col]) for r in rows], label=f"p{col[:-1]}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(t, [float(r["Requests/s"]) for r in rows], color="grey", linestyle=":", label="req/s")
    ax2.set_ylabel("requests/s")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return out_png


def run_loadtest(cfg: LoadTestConfig, payloads: Path) -> dict[str, object]:
    """Run Locust; return the SLO result. Raises GateFailedError when an SLO is missed."""
    slo_path = Path(cfg.slo or DEFAULT_SLO[cfg.scenario])
    slo = load_slo(slo_path)  # fail fast on a malformed file, before any traffic
    if slo.scenario != cfg.scenario:
        from distill.errors import ConfigError

        raise ConfigError(f"{slo_path} is an SLO for scenario {slo.scenario!r}, not {cfg.scenario!r}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "slo_result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "DISTILRANK_PAYLOADS": str(payloads), "DISTILRANK_SLO": str(slo_path),
           "DISTILRANK_SLO_RESULT": str(result_path), "DISTILRANK_INDEX": cfg.index,
           "DISTILRANK_WINDOW": str(cfg.passages)}
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)  # the Locust process itself needs gevent's patching
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILES[cfg.scenario]), "--headless",
           "--users", str(cfg.users), "--spawn-rate", str(cfg.spawn_rate), "--run-time", cfg.run_time,
           "--host", cfg.host, "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"),
           "--json-file", str(out / "stats"), "--stop-timeout", "30", "--loglevel", "WARNING"]
    if cfg.processes > 1:
        cmd += ["--processes", str(cfg.processes)]
    logger.info("running: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, check=False)  # output streams to the terminal: progress is visible
    if not result_path.exists():
        raise DistilrankError(f"locust exited with code {proc.returncode} without an SLO result; see its output above")
    result = json.loads(result_path.read_text())
    history = out / "locust_stats_history.csv"
    if history.exists():
        plot_latency(history, out / "latency.png")
    if not result["passed"]:
        lines = [f"{v['target']} {v['metric']}: measured {v['measured']:.4g}, limit {v['limit']:g}" for v in result["violations"]]
        raise GateFailedError(f"{len(lines)} SLO violation(s) in {slo_path}:\n  " + "\n  ".join(lines))
    return result
