"""Locust scenario: OpenSearch ``_search`` with the distilrank rescore clause.

Environment: DISTILRANK_PAYLOADS (queries), DISTILRANK_INDEX, DISTILRANK_WINDOW, DISTILRANK_SLO.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, events, task

from loadtests import _hooks
from loadtests._checks import check_search_response
from loadtests.payloads import read_payloads

_hooks.install(events)
QUERIES = [p["query"] for p in read_payloads(os.environ["DISTILRANK_PAYLOADS"])]
INDEX = os.environ.get("DISTILRANK_INDEX", "distilrank")
WINDOW = int(os.environ.get("DISTILRANK_WINDOW", "20"))
SIZE = 10


class SearchUser(FastHttpUser):
    @task
    def search_rescored(self) -> None:
        q = random.choice(QUERIES)
        body = {"size": SIZE, "query": {"multi_match": {"query": q, "fields": ["title", "text"]}},
                "rescore": {"window_size": WINDOW, "distilrank": {"query_text": q, "fields": ["title", "text"]}}}
        with self.client.post(f"/{INDEX}/_search", json=body, name="/_search+rescore", catch_response=True) as resp:
            problem = check_search_response(resp.status_code, resp.content, SIZE)
            if problem:
                resp.failure(problem)
            else:
                resp.success()
