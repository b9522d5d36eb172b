"""Locust load tests with enforced latency SLOs (``distilrank loadtest``).

Importing this package does not import Locust (which monkey-patches the interpreter with gevent):
Locust only runs in the subprocess that :func:`run_loadtest` starts.
"""

from __future__ import annotations

from loadtests._checks import check_rerank_response, check_search_response
from loadtests.payloads import DEMO_DATASET, build_payloads, read_payloads
from loadtests.runner import DEFAULT_SLO, LoadTestConfig, load_scenario_slo, plot_latency, run_loadtest
from loadtests.slo import SLO, Limits, Violation, check_slo, load_slo

__all__ = [
    "DEFAULT_SLO",
    "DEMO_DATASET",
    "SLO",
    "LoadTestConfig",
    "Limits",
    "Violation",
    "build_payloads",
    "check_rerank_response",
    "check_search_response",
    "check_slo",
    "load_scenario_slo",
    "load_slo",
    "plot_latency",
    "read_payloads",
    "run_loadtest",
]
