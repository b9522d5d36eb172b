"""Unit tests of the load-test building blocks: SLO files, the threshold checker, response checks,
payloads, run configuration and the latency plot. No server, no Locust run."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from distill.core.errors import ConfigError, DataError
from loadtests import (
    DEFAULT_SLO,
    SLO,
    Limits,
    LoadTestConfig,
    build_payloads,
    check_rerank_response,
    check_search_response,
    check_slo,
    load_slo,
    plot_latency,
    read_payloads,
)


def _stats(samples_ms: list[int], failures: int = 0):
    """A real locust RequestStats fed with real response times."""
    # Importing locust monkey-patches the whole test process with gevent unless told not to;
    # the stats classes need no patching. The variable is removed again so Locust subprocesses patch.
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        from locust.stats import RequestStats
    finally:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]

    stats = RequestStats()
    for ms in samples_ms:
        stats.log_request("POST", "/v1/rerank", ms, 100)
    for _ in range(failures):
        stats.log_error("POST", "/v1/rerank", "boom")
    return stats


def _endpoints(stats) -> dict:
    return {f"{e.method} {e.name}": e for e in stats.entries.values()}


def test_checker_reports_metric_limit_and_measured() -> None:
    stats = _stats([100] * 90 + [900] * 10, failures=5)
    slo = SLO(scenario="ranker", total=Limits(p50_ms=200, p95_ms=500, max_error_ratio=0.01),
              endpoints={"POST /v1/rerank": Limits(p99_ms=2000), "POST /missing": Limits(p50_ms=1)})
    violations = check_slo(slo, stats.total, _endpoints(stats))
    by_metric = {(v.target, v.metric): v for v in violations}
    assert set(by_metric) == {("total", "p95_ms"), ("total", "max_error_ratio"), ("POST /missing", "num_requests")}
    assert by_metric[("total", "p95_ms")].measured == 900
    assert "total p95_ms = 900 (limit <= 500)" in str(by_metric[("total", "p95_ms")])
    assert by_metric[("total", "max_error_ratio")].measured == pytest.approx(5 / 100)
    assert check_slo(SLO(scenario="ranker", total=Limits(p95_ms=1000)), stats.total, {}) == []


def test_checker_per_endpoint_and_min_rps() -> None:
    stats = _stats([50] * 20 + [3000] * 5)
    slo = SLO(scenario="ranker", total=Limits(p99_ms=5000, min_rps=1e9),
              endpoints={"POST /v1/rerank": Limits(p50_ms=10, p95_ms=4000)})
    violations = {(v.target, v.metric): v for v in check_slo(slo, stats.total, _endpoints(stats))}
    assert set(violations) == {("total", "min_rps"), ("POST /v1/rerank", "p50_ms")}
    assert "(limit >= 1e+09)" in str(violations[("total", "min_rps")])
    assert violations[("POST /v1/rerank", "p50_ms")].measured == 50


def test_an_empty_run_never_passes() -> None:
    stats = _stats([])
    violations = check_slo(SLO(scenario="ranker"), stats.total, {})
    assert [(v.target, v.metric) for v in violations] == [("total", "num_requests")]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", r"bad\.json:1: invalid JSON"),
        ('{\n "scenario": "ranker",\n "total": {"p95_ms": 1,}\n}', r"bad\.json:3: invalid JSON"),
        ('{"scenario": "ranker", "total": {"p95": 10}}', r"total\.p95: Extra inputs are not permitted"),
        ('{"scenario": "ranker", "total": {"p95_ms": -1}}', r"total\.p95_ms: Input should be greater than 0"),
        ('{"scenario": "ranker", "total": {"max_error_ratio": 2}}', r"total\.max_error_ratio: Input should be less"),
        ('{"scenario": "web", "total": {}}', r"scenario: Input should be 'ranker' or 'opensearch'"),
        ('{"scenario": "ranker", "endpoints": {"POST /v1/rerank": {"p99_ms": "x"}}}',
         r"endpoints\.POST /v1/rerank\.p99_ms: Input should be a valid number"),
    ],
)
def test_malformed_slo_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_slo(path)


def test_missing_slo_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.json: SLO file not found"):
        load_slo(tmp_path / "nope.json")


def test_default_slo_files_are_valid_and_cover_their_endpoint() -> None:
    ranker, search = load_slo(DEFAULT_SLO["ranker"]), load_slo(DEFAULT_SLO["opensearch"])
    assert ranker.scenario == "ranker" and ranker.total.p95_ms and "POST /v1/rerank" in ranker.endpoints
    assert search.scenario == "opensearch" and "POST /_search+rescore" in search.endpoints
    assert "calibrat" in ranker.description


def test_response_checks_catch_wrong_answers() -> None:
    good = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}
    assert check_rerank_response(200, json.dumps(good), 2) is None
    assert "1 results for 2" in check_rerank_response(200, json.dumps({"results": good["results"][:1]}), 2)
    unsorted = {"results": list(reversed(good["results"]))}
    assert "not sorted" in check_rerank_response(200, json.dumps(unsorted), 2)
    ints = {"results": [{"index": 0, "relevance_score": 1}, {"index": 1, "relevance_score": 0}]}
    assert "not a finite JSON float" in check_rerank_response(200, json.dumps(ints), 2)
    dup = {"results": [{"index": 0, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}
    assert "not a permutation" in check_rerank_response(200, json.dumps(dup), 2)
    assert "HTTP 503" in check_rerank_response(503, "busy", 2)
    assert "not a rerank response" in check_rerank_response(200, "<html>", 2)
    search = {"hits": {"total": {"value": 5}, "hits": [{"_score": 2.0}, {"_score": 1.0}]}}
    assert check_search_response(200, json.dumps(search), 2) is None
    assert "expected 5" in check_search_response(200, json.dumps(search), 10)
    bad_order = {"hits": {"total": {"value": 5}, "hits": [{"_score": 1.0}, {"_score": 2.0}]}}
    assert "not sorted" in check_search_response(200, json.dumps(bad_order), 2)


def test_payloads_are_real_bm25_candidates(demo_data: Path, tmp_path: Path) -> None:
    from distill.core.bm25 import BM25Index
    from distill.core.formats import read_corpus, read_queries

    path = build_payloads(tmp_path / "p.json", passages=7, max_queries=5)
    payloads = read_payloads(path)
    assert len(payloads) == 5 and all(len(p["documents"]) == 7 for p in payloads)
    docs = read_corpus(demo_data / "corpus.jsonl")
    first_q = next(iter(read_queries(demo_data / "queries.test.tsv").values()))
    hits = BM25Index(docs).search({first_q.qid: first_q}, top_k=7)[first_q.qid]
    top = sorted(hits, key=hits.__getitem__, reverse=True)
    assert payloads[0]["query"] == first_q.text
    assert payloads[0]["documents"] == [docs[d].full_text for d in top]


def test_bad_payload_files(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('[{"query": "q", "documents": []}]')
    with pytest.raises(DataError, match=r"p\.json: payload #0 is malformed"):
        read_payloads(path)
    with pytest.raises(ConfigError, match="lower --passages"):
        build_payloads(tmp_path / "x.json", passages=100_000, max_queries=2)
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scenario": "web"}, "scenario must be one of ranker, opensearch"),
        ({"host": "127.0.0.1:8080"}, "host must be a base URL"),
        ({"users": 0}, r"users=0"),
        ({"spawn_rate": 0}, "spawn_rate must be > 0"),
        ({"run_time": "ten seconds"}, "not a Locust duration"),
        ({"index": "a/b"}, "index must be"),
    ],
)
def test_loadtest_config_is_validated(kwargs: dict, match: str) -> None:
    args = {"scenario": "ranker", "host": "http://127.0.0.1:8080"} | kwargs
    with pytest.raises(ConfigError, match=match):
        LoadTestConfig(**args)


@pytest.mark.parametrize("run_time", ["10s", "10", "2m", "1h30m"])
def test_loadtest_config_accepts_locust_durations(run_time: str) -> None:
    assert LoadTestConfig(scenario="opensearch", host="http://127.0.0.1:9200", run_time=run_time).slo_path == \
        DEFAULT_SLO["opensearch"]


def test_latency_plot_from_stats_history(tmp_path: Path) -> None:
    history = tmp_path / "locust_stats_history.csv"
    cols = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "50%", "95%", "99%"]
    with open(history, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerow(dict(zip(cols, ["1000", "1", "", "Aggregated", "0", "N/A", "N/A", "N/A"], strict=True)))
        for t in range(1, 6):
            w.writerow(dict(zip(cols, [str(1000 + t), "2", "", "Aggregated", "3.5", "40", "80", "95"], strict=True)))
            w.writerow(dict(zip(cols, [str(1000 + t), "2", "POST", "/v1/rerank", "3.5", "40", "80", "95"],
                                strict=True)))
    png = plot_latency(history, tmp_path / "latency.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(cols) + "\n")
    assert plot_latency(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
