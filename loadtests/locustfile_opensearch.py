"""Locust scenario: OpenSearch ``_search`` with the distilrank rescore clause.

The body is built by :func:`opensearch_plugin.search_body` (BM25 ``multi_match`` over title and
text plus ``rescore.distilrank``), the same one the plugin's own evaluation sends.
Environment: DISTILRANK_PAYLOADS (queries), DISTILRANK_INDEX, DISTILRANK_WINDOW, DISTILRANK_SLO.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, events, task

from loadtests import _hooks
from loadtests._checks import check_search_response
from loadtests.payloads import read_payloads
from opensearch_plugin import RescoreParams, search_body

_hooks.install(events)
QUERIES = [p["query"] for p in read_payloads(os.environ["DISTILRANK_PAYLOADS"])]
INDEX = os.environ.get("DISTILRANK_INDEX", "distilrank")
WINDOW = int(os.environ.get("DISTILRANK_WINDOW", "20"))
# Hits past the rescore window keep their BM25 scores, so only a size within the window must be sorted.
SIZE = min(10, WINDOW)


class SearchUser(FastHttpUser):
    """A closed-loop client: each user sends its next search as soon as the last one returns."""

    @task
    def search_rescored(self) -> None:
        q = random.choice(QUERIES)
        body = search_body(q, size=SIZE, params=RescoreParams(window_size=WINDOW))
        with self.client.post(f"/{INDEX}/_search", json=body, name="/_search+rescore", catch_response=True) as resp:
            problem = check_search_response(resp.status_code, resp.content, SIZE)
            if problem:
                resp.failure(problem)
            else:
                resp.success()
