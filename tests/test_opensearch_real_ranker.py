"""OpenSearch + plugin + the REAL ranker service (`distilrank serve`, tiny exported model) end to end,
and the Locust OpenSearch scenario against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ranker_fixtures import free_port, ranker_hf_dir, ranker_model_dir  # noqa: F401
from test_opensearch_plugin import QUERY, READ_TIMEOUT_S, node, ranker, search  # noqa: F401

import opensearch_plugin as osp
from distill.cli import main
from distill.data import read_corpus

pytestmark = [pytest.mark.opensearch, pytest.mark.integration]

DEMO = Path(__file__).resolve().parent.parent / "distill" / "datasets" / "scifact_mini"
DEMO_INDEX = "distilrank-demo"


@pytest.fixture(scope="module")
def real_ranker(ranker_model_dir: Path) -> Iterator[str]:  # noqa: F811
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "--model", str(ranker_model_dir), "--port",
                             str(port), "--threads", "1", "--scores", "raw"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    import httpx

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


@pytest.fixture(scope="module")
def pointed_at_real_ranker(node, ranker, real_ranker: str):  # noqa: F811
    """Point the plugin at the real service; afterwards back at the stand-in the other tests use."""
    node.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoint": real_ranker,
                                                   "distilrank.ranker.read_timeout": "30s"}})
    yield node
    node.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoint": ranker.url,
                                                   "distilrank.ranker.read_timeout": f"{int(READ_TIMEOUT_S * 1000)}ms"}})


def test_plugin_order_equals_real_ranker_order(pointed_at_real_ranker, real_ranker: str) -> None:
    from ranker.client import RerankClient

    params = osp.RescoreParams(window_size=15, query_weight=0.0, rescore_query_weight=1.0)
    first = search(pointed_at_real_ranker, None, size=15)
    rescored = search(pointed_at_real_ranker, params, size=15)
    texts = [osp.document_text(h["_source"], params.fields) for h in first]
    reply = RerankClient(real_ranker, timeout=30).rerank(QUERY, texts)
    expected = [first[r.index]["_id"] for r in reply.results]
    assert [h["_id"] for h in rescored] == expected
    scores = {first[r.index]["_id"]: r.relevance_score for r in reply.results}
    for hit in rescored:
        assert hit["_score"] == pytest.approx(scores[hit["_id"]], rel=1e-5, abs=1e-5)
    stats = pointed_at_real_ranker.transport.perform_request("GET", "/_plugins/distilrank/stats")
    assert json.dumps(stats)  # the endpoint answers while a real ranker is attached


def test_locust_opensearch_scenario_against_plugin_and_real_ranker(pointed_at_real_ranker, tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    osp.create_index(pointed_at_real_ranker, DEMO_INDEX, recreate=True)
    osp.bulk_load(pointed_at_real_ranker, DEMO_INDEX, read_corpus(DEMO / "corpus.jsonl").values())
    pointed_at_real_ranker.indices.refresh(index=DEMO_INDEX)
    slo = {"scenario": "opensearch", "total": {"p95_ms": 30000, "max_error_ratio": 0.0},
           "endpoints": {"POST /_search+rescore": {"p99_ms": 30000}}}
    (tmp_path / "slo.json").write_text(json.dumps(slo))
    code = main(["loadtest", "--scenario", "opensearch", "--host", "http://127.0.0.1:9200", "--index", DEMO_INDEX,
                 "--users", "2", "--spawn-rate", "2", "--run-time", "6s", "--passages", "10",
                 "--slo", str(tmp_path / "slo.json"), "--out", str(tmp_path / "out")])
    assert code == 0, capfd.readouterr().err[-3000:]
    result = json.loads((tmp_path / "out" / "slo_result.json").read_text())
    assert result["measured"]["POST /_search+rescore"]["requests"] > 0
    assert result["measured"]["POST /_search+rescore"]["failures"] == 0
