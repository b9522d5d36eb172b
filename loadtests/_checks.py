"""Response checks: a fast wrong answer counts as a failure, not as a fast success."""

from __future__ import annotations

import json
import math

__all__ = ["check_rerank_response", "check_search_response"]


def _sorted_floats(scores: list[object], what: str) -> str | None:
    for s in scores:
        if not isinstance(s, float) or not math.isfinite(s):
            return f"{what} {s!r} is not a finite JSON float"
    if any(a < b for a, b in zip(scores, scores[1:], strict=False)):
        return f"{what}s are not sorted in descending order"
    return None


def check_rerank_response(status: int, body: str | bytes | None, n_docs: int) -> str | None:
    """``None`` when a Cohere-style ``/v1/rerank`` answer is right, else what is wrong."""
    if status != 200:
        return f"HTTP {status}: {str(body)[:200]}"
    try:
        results = json.loads(body or b"")["results"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"not a rerank response ({exc})"
    if len(results) != n_docs:
        return f"{len(results)} results for {n_docs} documents"
    try:
        indices = sorted(r["index"] for r in results)
        scores = [r["relevance_score"] for r in results]
    except (KeyError, TypeError) as exc:
        return f"result without index/relevance_score ({exc})"
    if indices != list(range(n_docs)):
        return "result indices are not a permutation of the documents"
    return _sorted_floats(scores, "relevance_score")


def check_search_response(status: int, body: str | bytes | None, size: int) -> str | None:
    """``None`` when an OpenSearch ``_search`` answer has the expected number of sorted hits."""
    if status != 200:
        return f"HTTP {status}: {str(body)[:200]}"
    try:
        data = json.loads(body or b"")
        hits = data["hits"]["hits"]
        total = data["hits"]["total"]["value"]
    except (ValueError, KeyError, TypeError) as exc:
        return f"not a search response ({exc})"
    expected = min(size, total)
    if len(hits) != expected:
        return f"{len(hits)} hits, expected {expected}"
    if expected == 0:
        return "no hits: the query matched nothing"
    return _sorted_floats([h.get("_score") for h in hits], "_score")
