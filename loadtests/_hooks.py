"""The Locust ``quitting`` hook that enforces an SLO file.

Only the local or master runner evaluates (its ``environment.stats`` aggregates every worker's
requests); workers skip, so distributed runs are checked once, on complete numbers.
"""

from __future__ import annotations

import json
import logging
import os

from distill._io import write_json
from loadtests.slo import check_slo, load_slo

logger = logging.getLogger(__name__)

SLO_ENV = "DISTILRANK_SLO"
RESULT_ENV = "DISTILRANK_SLO_RESULT"
SLO_EXIT_CODE = 5  # = distill.errors.GateFailedError


def install(events) -> None:  # events: locust.events
    @events.quitting.add_listener
    def _enforce_slo(environment, **_kwargs) -> None:
        from locust.runners import WorkerRunner

        if isinstance(environment.runner, WorkerRunner) or not os.environ.get(SLO_ENV):
            return
        slo = load_slo(os.environ[SLO_ENV])
        stats = environment.stats
        endpoints = {f"{e.method} {e.name}": e for e in stats.entries.values()}
        violations = check_slo(slo, stats.total, endpoints)
        measured = {
            name: {"requests": e.num_requests, "failures": e.num_failures,
                   "error_ratio": e.num_failures / e.num_requests if e.num_requests else None,
                   "p50_ms": e.get_response_time_percentile(0.5), "p95_ms": e.get_response_time_percentile(0.95),
                   "p99_ms": e.get_response_time_percentile(0.99), "rps": e.total_rps}
            for name, e in [("total", stats.total), *endpoints.items()]
        }
        for v in violations:
            print(str(v), flush=True)
        if violations:
            environment.process_exit_code = SLO_EXIT_CODE
        else:
            print(f"all SLO thresholds of {os.environ[SLO_ENV]} met", flush=True)
        if os.environ.get(RESULT_ENV):
            write_json(os.environ[RESULT_ENV], {
                "slo": json.loads(slo.model_dump_json()), "measured": measured,
                "violations": [vars(v) for v in violations], "passed": not violations})
