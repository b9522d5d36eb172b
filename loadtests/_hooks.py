"""The Locust ``quitting`` hook that enforces an SLO file.

Only the local or master runner evaluates: in a distributed run the master's ``environment.stats``
aggregates every worker's requests, while a worker only sees its own share, so workers skip and
the verdict is printed exactly once, on complete numbers.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

from distill.core.atomic_io import write_json
from loadtests.slo import check_slo, load_slo

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.event import Events
    from locust.stats import StatsEntry

logger = logging.getLogger(__name__)

SLO_ENV = "DISTILRANK_SLO"
RESULT_ENV = "DISTILRANK_SLO_RESULT"
#: Locust's own convention for "the test failed"; ``distilrank loadtest`` turns it into exit code 5.
SLO_EXIT_CODE = 1


def measured_stats(entry: StatsEntry) -> dict[str, float | int | None]:
    """The numbers an SLO can limit, for one Locust stats entry (latencies in ms)."""
    n = entry.num_requests
    return {"requests": n, "failures": entry.num_failures,
            "error_ratio": entry.num_failures / n if n else None,
            "p50_ms": entry.get_response_time_percentile(0.5) if n else None,
            "p95_ms": entry.get_response_time_percentile(0.95) if n else None,
            "p99_ms": entry.get_response_time_percentile(0.99) if n else None,
            "rps": entry.total_rps}


def enforce_slo(environment: Environment) -> None:
    """Check every threshold of ``$DISTILRANK_SLO`` (per endpoint and total), print each violation,
    set ``environment.process_exit_code`` and write ``$DISTILRANK_SLO_RESULT``."""
    from locust.runners import WorkerRunner

    slo_path = os.environ.get(SLO_ENV)
    if isinstance(environment.runner, WorkerRunner) or not slo_path:
        return
    slo = load_slo(slo_path)
    stats = environment.stats
    endpoints = {f"{e.method} {e.name}": e for e in stats.entries.values()}
    violations = check_slo(slo, stats.total, endpoints)
    for v in violations:
        print(str(v), flush=True)
    if violations:
        environment.process_exit_code = SLO_EXIT_CODE
    else:
        print(f"all SLO thresholds of {slo_path} met", flush=True)
    if os.environ.get(RESULT_ENV):
        measured = {name: measured_stats(e) for name, e in [("total", stats.total), *endpoints.items()]}
        write_json(os.environ[RESULT_ENV], {
            "slo_file": slo_path, "slo": json.loads(slo.model_dump_json()), "measured": measured,
            "violations": [vars(v) for v in violations], "passed": not violations})


def install(events: Events) -> None:
    """Register :func:`enforce_slo` on ``events.quitting`` (call once, from a locustfile)."""

    @events.quitting.add_listener
    def _enforce_slo(environment: Environment, **_kwargs: object) -> None:
        enforce_slo(environment)
