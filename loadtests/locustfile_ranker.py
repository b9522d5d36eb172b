"""Locust scenario: the ranker's Cohere-compatible ``POST /v1/rerank`` with real payloads.

Environment: DISTILRANK_PAYLOADS (JSON from loadtests.payloads), DISTILRANK_SLO (optional),
DISTILRANK_API_KEY (optional bearer token).
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, events, task

from loadtests import _hooks
from loadtests._checks import check_rerank_response
from loadtests.payloads import read_payloads

_hooks.install(events)
PAYLOADS = read_payloads(os.environ["DISTILRANK_PAYLOADS"])


class RerankUser(FastHttpUser):
    """A closed-loop client: each user sends its next request as soon as the last one returns."""

    def on_start(self) -> None:
        key = os.environ.get("DISTILRANK_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @task
    def rerank(self) -> None:
        payload = random.choice(PAYLOADS)
        n = len(payload["documents"])
        with self.client.post("/v1/rerank", json=payload, headers=self.headers, name="/v1/rerank",
                              catch_response=True) as resp:
            problem = check_rerank_response(resp.status_code, resp.content, n)
            if problem:
                resp.failure(problem)
            else:
                resp.success()
