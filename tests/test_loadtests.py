from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ranker_fixtures import free_port, ranker_hf_dir, ranker_model_dir  # noqa: F401

from distill.cli import main
from distill.errors import DataError
from loadtests._checks import check_rerank_response, check_search_response
from loadtests.slo import SLO, Limits, check_slo, load_slo


def _stats(samples_ms: list[int], failures: int = 0):
    """A real locust StatsEntry fed with real response times."""
    import os

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


def test_checker_reports_metric_limit_and_measured() -> None:
    stats = _stats([100] * 90 + [900] * 10, failures=5)
    slo = SLO(scenario="ranker", total=Limits(p50_ms=200, p95_ms=500, max_error_ratio=0.01),
              endpoints={"POST /v1/rerank": Limits(p99_ms=2000), "POST /missing": Limits(p50_ms=1)})
    violations = check_slo(slo, stats.total, {f"{e.method} {e.name}": e for e in stats.entries.values()})
    by_metric = {(v.target, v.metric): v for v in violations}
    assert set(by_metric) == {("total", "p95_ms"), ("total", "max_error_ratio"), ("POST /missing", "num_requests")}
    assert by_metric[("total", "p95_ms")].measured == 900
    assert "total p95_ms = 900 (limit <= 500)" in str(by_metric[("total", "p95_ms")])
    assert by_metric[("total", "max_error_ratio")].measured == pytest.approx(5 / 100)
    assert check_slo(SLO(scenario="ranker", total=Limits(p95_ms=1000)), stats.total, {}) == []


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", r"bad\.json:1: invalid JSON"),
        ('{"scenario": "ranker", "total": {"p95": 10}}', r"total\.p95: Extra inputs are not permitted"),
        ('{"scenario": "ranker", "total": {"p95_ms": -1}}', r"total\.p95_ms: Input should be greater than 0"),
        ('{"scenario": "web", "total": {}}', r"scenario: Input should be 'ranker' or 'opensearch'"),
    ],
)
def test_malformed_slo_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_slo(path)


def test_default_slo_files_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent / "loadtests" / "slo"
    assert load_slo(root / "ranker.json").total.p95_ms and load_slo(root / "opensearch.json").scenario == "opensearch"


def test_response_checks_catch_wrong_answers() -> None:
    good = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}
    assert check_rerank_response(200, json.dumps(good), 2) is None
    assert "1 results for 2" in check_rerank_response(200, json.dumps({"results": good["results"][:1]}), 2)
    unsorted = {"results": list(reversed(good["results"]))}
    assert "not sorted" in check_rerank_response(200, json.dumps(unsorted), 2)
    ints = {"results": [{"index": 0, "relevance_score": 1}, {"index": 1, "relevance_score": 0}]}
    assert "not a finite JSON float" in check_rerank_response(200, json.dumps(ints), 2)
    assert "HTTP 503" in check_rerank_response(503, "busy", 2)
    search = {"hits": {"total": {"value": 5}, "hits": [{"_score": 2.0}, {"_score": 1.0}]}}
    assert check_search_response(200, json.dumps(search), 2) is None
    assert "expected 5" in check_search_response(200, json.dumps(search), 10)


@pytest.fixture(scope="module")
def ranker_url(ranker_model_dir: Path):  # noqa: F811
    """The real ranker service (`distilrank serve`) on 127.0.0.1 with the tiny exported model."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "--model", str(ranker_model_dir),
                             "--port", str(port), "--threads", "1"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("ranker did not become ready")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _run(url: str, tmp_path: Path, slo: dict | None, capsys: pytest.CaptureFixture[str], processes: int = 1) -> int:
    args = ["loadtest", "--scenario", "ranker", "--host", url, "--users", "2", "--spawn-rate", "2",
            "--run-time", "6s", "--passages", "5", "--out", str(tmp_path / "out"), "--processes", str(processes)]
    if slo is not None:
        (tmp_path / "slo.json").write_text(json.dumps(slo))
        args += ["--slo", str(tmp_path / "slo.json")]
    return main(args)


@pytest.mark.integration
def test_generous_slo_passes_against_real_ranker(ranker_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    slo = {"scenario": "ranker", "total": {"p95_ms": 30000, "max_error_ratio": 0.0, "min_rps": 0.1},
           "endpoints": {"POST /v1/rerank": {"p99_ms": 30000}}}
    assert _run(ranker_url, tmp_path, slo, capfd) == 0
    out = tmp_path / "out"
    result = json.loads((out / "slo_result.json").read_text())
    assert result["passed"] and result["measured"]["total"]["requests"] > 0
    assert result["measured"]["POST /v1/rerank"]["failures"] == 0
    for name in ("locust_stats.csv", "locust_stats_history.csv", "report.html", "stats.json", "latency.png"):
        assert (out / name).stat().st_size > 0, name


@pytest.mark.integration
def test_impossible_slo_fails_naming_metric_limit_and_value(ranker_url: str, tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    slo = {"scenario": "ranker", "total": {"p50_ms": 0.001}}
    assert _run(ranker_url, tmp_path, slo, capfd, processes=2) == 5  # distributed: master + 2 workers
    err = capfd.readouterr()
    assert re.search(r"total p50_ms: measured [\d.]+, limit 0\.001", err.err), err.err[-2000:]


def test_malformed_slo_file_exits_4_before_any_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "slo.json").write_text('{"scenario": "ranker", "total": {"p95_ms": "fast"}}')
    code = main(["loadtest", "--scenario", "ranker", "--host", "http://127.0.0.1:9", "--slo", str(tmp_path / "slo.json"),
                 "--out", str(tmp_path / "out")])
    assert code == 4
    assert "total.p95_ms: Input should be a valid number" in capsys.readouterr().err
