"""Run a Locust scenario headless as a subprocess and collect its results.

Locust runs in its own process because it monkey-patches the interpreter with gevent; the
``quitting`` hook (:mod:`loadtests._hooks`) writes ``slo_result.json``, which this module turns into
an exit code, a Markdown summary and a latency-over-time plot.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distill.core.atomic_io import atomic_write
from distill.core.errors import ConfigError, DistilrankError, GateFailedError, MissingPrerequisiteError
from loadtests.slo import SLO, load_slo

__all__ = ["DEFAULT_SLO", "LoadTestConfig", "load_scenario_slo", "plot_latency", "preflight", "run_loadtest",
           "write_summary"]

logger = logging.getLogger(__name__)

Scenario = Literal["ranker", "opensearch"]
_HERE = Path(__file__).resolve().parent
LOCUSTFILES: dict[str, Path] = {"ranker": _HERE / "locustfile_ranker.py",
                                 "opensearch": _HERE / "locustfile_opensearch.py"}
DEFAULT_SLO: dict[str, Path] = {"ranker": _HERE / "slo" / "ranker.json",
                                "opensearch": _HERE / "slo" / "opensearch.json"}
_RUN_TIME = re.compile(r"^(?=\d)(\d+h)?(\d+m)?(\d+s?)?$")


@dataclass(frozen=True)
class LoadTestConfig:
    """One headless Locust run. ``run_time`` uses Locust's syntax (``20s``, ``2m``, ``1h30m``);
    ``passages`` is documents per rerank request, or the rescore ``window_size`` for OpenSearch."""

    scenario: Scenario
    host: str
    users: int = 1
    spawn_rate: float = 1.0
    run_time: str = "30s"
    slo: Path | None = None
    passages: int = 20
    out: Path = Path("runs/loadtest")
    processes: int = 1
    index: str = "distilrank"
    check_host: bool = True

    def __post_init__(self) -> None:
        if self.scenario not in LOCUSTFILES:
            raise ConfigError(f"scenario must be one of {', '.join(LOCUSTFILES)}, got {self.scenario!r}")
        if not re.match(r"^https?://[^/\s]+", self.host):
            raise ConfigError(f"host must be a base URL like http://127.0.0.1:8080, got {self.host!r}")
        if self.users < 1 or self.processes < 1 or self.passages < 1:
            raise ConfigError("users, processes and passages must each be >= 1, got "
                              f"users={self.users} processes={self.processes} passages={self.passages}")
        if self.spawn_rate <= 0:
            raise ConfigError(f"spawn_rate must be > 0 users/s, got {self.spawn_rate}")
        if not _RUN_TIME.match(self.run_time):
            raise ConfigError(f"run_time {self.run_time!r} is not a Locust duration; use e.g. 30s, 2m or 1h30m")
        if not self.index or "/" in self.index:
            raise ConfigError(f"index must be an OpenSearch index name without '/', got {self.index!r}")

    @property
    def slo_path(self) -> Path:
        return Path(self.slo) if self.slo is not None else DEFAULT_SLO[self.scenario]


def preflight(cfg: LoadTestConfig) -> None:
    """Fail in milliseconds, with exit code 3, when the target is down instead of measuring 100% errors."""
    import httpx

    url = cfg.host.rstrip("/") + ("/ready" if cfg.scenario == "ranker" else f"/{cfg.index}")
    hint = ("start it with `distilrank serve --model DIR`" if cfg.scenario == "ranker"
            else "start the node and load the index with `distilrank opensearch ...`")
    try:
        status = httpx.get(url, timeout=5.0).status_code
    except httpx.HTTPError as exc:
        raise MissingPrerequisiteError(f"{url} is not reachable ({type(exc).__name__}); {hint}") from exc
    if status in (401, 403) and cfg.scenario == "ranker":
        return  # auth is the scenario's business (DISTILRANK_API_KEY); the service is up
    if status != 200:
        raise MissingPrerequisiteError(f"{url} answered HTTP {status}, so the target is not ready; {hint}")


def plot_latency(history_csv: Path, out_png: Path) -> Path | None:
    """p50/p95/p99 latency and requests/s over time from Locust's ``_stats_history.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("Name") == "Aggregated"]
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
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8)
    ax.set_title(f"{history_csv.parent.name}: latency over time (Aggregated)", fontsize=9)
    fig.tight_layout()
    with atomic_write(out_png, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return out_png


def write_summary(result: dict[str, object], out_md: Path) -> Path:
    """Markdown table of the measured numbers per endpoint and total, then the verdict."""
    measured: dict[str, dict[str, float | None]] = result["measured"]  # type: ignore[assignment]
    lines = ["| target | requests | failures | error ratio | p50 ms | p95 ms | p99 ms | req/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    for name, m in measured.items():
        lines.append(f"| {name} | {m['requests']} | {m['failures']} | {fmt(m['error_ratio'], '.3f')} | "
                     f"{fmt(m['p50_ms'], '.0f')} | {fmt(m['p95_ms'], '.0f')} | {fmt(m['p99_ms'], '.0f')} | "
                     f"{fmt(m['rps'], '.2f')} |")
    violations: list[dict[str, object]] = result["violations"]  # type: ignore[assignment]
    lines.append("")
    lines.append("**SLO: passed**" if result["passed"] else f"**SLO: {len(violations)} violation(s)**")
    lines += [f"- {_describe(v)}" for v in violations]
    with atomic_write(out_md) as fh:
        fh.write("\n".join(lines) + "\n")
    return out_md


def _describe(v: dict[str, object]) -> str:
    op = ">=" if v["metric"] == "min_rps" else "<="
    return f"{v['target']} {v['metric']}: measured {float(v['measured']):.4g}, limit {op} {float(v['limit']):g}"


def load_scenario_slo(cfg: LoadTestConfig) -> SLO:
    slo = load_slo(cfg.slo_path)
    if slo.scenario != cfg.scenario:
        raise ConfigError(f"{cfg.slo_path} is an SLO for scenario {slo.scenario!r}, not {cfg.scenario!r}; "
                          f"pass --slo with a {cfg.scenario!r} file")
    return slo


def run_loadtest(cfg: LoadTestConfig, payloads: Path) -> dict[str, object]:
    """Run Locust headless; write ``locust_*.csv``, ``report.html``, ``stats.json``, ``slo_result.json``,
    ``summary.md`` and ``latency.png`` to ``cfg.out``; return the SLO result.

    Raises GateFailedError (exit 5) listing every violated threshold with its limit and measured value.
    """
    load_scenario_slo(cfg)  # a malformed file fails before any traffic
    if cfg.check_host:
        preflight(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "slo_result.json"
    result_path.unlink(missing_ok=True)  # a stale verdict must never be read as this run's
    env = {**os.environ, "DISTILRANK_PAYLOADS": str(payloads), "DISTILRANK_SLO": str(cfg.slo_path),
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
    # Locust's periodic stats table streams to this terminal: that is the progress display.
    proc = subprocess.run(cmd, env=env, check=False)
    if not result_path.exists():
        raise DistilrankError(f"locust exited with code {proc.returncode} without an SLO result in {result_path}; "
                              "see its output above")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    history = out / "locust_stats_history.csv"
    if history.exists():
        plot_latency(history, out / "latency.png")
    write_summary(result, out / "summary.md")
    if not result["passed"]:
        lines = [_describe(v) for v in result["violations"]]
        raise GateFailedError(f"{len(lines)} SLO violation(s) of {cfg.slo_path} (results in {out}):\n  "
                              + "\n  ".join(lines))
    return result
