"""Locust load tests with enforced latency SLOs (``distilrank loadtest``)."""

from __future__ import annotations

from loadtests.slo import SLO, Limits, Violation, check_slo, load_slo

__all__ = ["SLO", "Limits", "Violation", "check_slo", "load_slo"]
