"""Real Locust runs (headless, a few seconds, 2 users) against the real ranker service on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.cli import main
from ranker.process import free_port, serving


@pytest.fixture(scope="module")
def ranker_url(ranker_model_dir: Path) -> Iterator[str]:
    """The real ranker service (`distilrank serve`) on 127.0.0.1 with the tiny exported model."""
    with serving(ranker_model_dir, "--threads", "1", "--no-spin", timeout=60) as url:
        yield url


def _run(url: str, tmp_path: Path, slo: dict | None, processes: int = 1) -> int:
    args = ["loadtest", "--scenario", "ranker", "--host", url, "--users", "2", "--spawn-rate", "2",
            "--run-time", "6s", "--passages", "5", "--out", str(tmp_path / "out"), "--processes", str(processes)]
    if slo is not None:
        (tmp_path / "slo.json").write_text(json.dumps(slo))
        args += ["--slo", str(tmp_path / "slo.json")]
    return main(args)


@pytest.mark.integration
def test_generous_slo_passes_against_real_ranker(ranker_url: str, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    slo = {"scenario": "ranker", "total": {"p95_ms": 30000, "max_error_ratio": 0.0, "min_rps": 0.1},
           "endpoints": {"POST /v1/rerank": {"p99_ms": 30000}}}
    assert _run(ranker_url, tmp_path, slo) == 0
    out = tmp_path / "out"
    result = json.loads((out / "slo_result.json").read_text())
    assert result["passed"] and result["violations"] == []
    rerank = result["measured"]["POST /v1/rerank"]
    assert rerank["requests"] > 0 and rerank["failures"] == 0 and rerank["p95_ms"] > 0
    for name in ("locust_stats.csv", "locust_stats_history.csv", "report.html", "stats.json", "latency.png",
                 "summary.md", "payloads.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "latency.png").read_bytes()[:4] == b"\x89PNG"
    stdout = capfd.readouterr().out
    assert "all SLO thresholds" in stdout and "**SLO: passed**" in stdout
    assert "POST" in stdout and "/v1/rerank" in stdout  # Locust's live stats table: the progress display


@pytest.mark.integration
def test_impossible_slo_fails_naming_metric_limit_and_value(ranker_url: str, tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    slo = {"scenario": "ranker", "total": {"p50_ms": 0.001}, "endpoints": {"POST /v1/rerank": {"min_rps": 1e6}}}
    assert _run(ranker_url, tmp_path, slo, processes=2) == 5  # distributed: master + 2 workers
    captured = capfd.readouterr()
    assert re.search(r"total p50_ms: measured [\d.]+, limit <= 0\.001", captured.err), captured.err[-2000:]
    assert re.search(r"POST /v1/rerank min_rps: measured [\d.]+, limit >= 1e\+06", captured.err)
    # only the master evaluates, on the aggregated numbers: each violation is printed once, not once per worker
    assert captured.out.count("SLO violated: total p50_ms") == 1, captured.out[-3000:]
    result = json.loads((tmp_path / "out" / "slo_result.json").read_text())
    assert not result["passed"] and result["measured"]["total"]["requests"] > 0


def test_malformed_slo_file_exits_4_before_any_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "slo.json").write_text('{"scenario": "ranker", "total": {"p95_ms": "fast"}}')
    code = main(["loadtest", "--scenario", "ranker", "--host", "http://127.0.0.1:9",
                 "--slo", str(tmp_path / "slo.json"), "--out", str(tmp_path / "out")])
    assert code == 4
    assert re.search(r"slo\.json: invalid SLO: total\.p95_ms: Input should be a valid number", capsys.readouterr().err)
    assert not (tmp_path / "out" / "payloads.json").exists()


def test_slo_for_the_other_scenario_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "slo.json").write_text('{"scenario": "opensearch", "total": {"p95_ms": 100}}')
    code = main(["loadtest", "--scenario", "ranker", "--slo", str(tmp_path / "slo.json"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "is an SLO for scenario 'opensearch', not 'ranker'" in capsys.readouterr().err


def test_unreachable_target_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(["loadtest", "--scenario", "ranker", "--host", url, "--passages", "3", "--run-time", "2s",
                 "--out", str(tmp_path / "out")])
    assert code == 3
    assert re.search(r"/ready is not reachable .*distilrank serve", capsys.readouterr().err)
    assert not (tmp_path / "out" / "slo_result.json").exists()
