"""The distilrank rescorer inside a real OpenSearch node (installed from Maven Central on first use).

The ranker side is a small deterministic /v1/rerank server on 127.0.0.1 with switchable failure modes
(slow, garbage JSON, wrong result count, down); the real ranker service is exercised in ranker's tests.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from random import Random

import pytest

from distill.cli import main
from distill.core.formats import Document, read_corpus
from distill.core.datasets import bundled_dataset
from tests.serve_process import serving

# the first test's setup may fetch OpenSearch from Maven Central, build the plugin and start the node
pytestmark = [pytest.mark.opensearch, pytest.mark.integration, pytest.mark.timeout(1200)]

opensearchpy = pytest.importorskip("opensearchpy")

import opensearch_plugin as osp  # noqa: E402

INDEX = "distilrank-test"
INDEX_2SHARDS = "distilrank-test-2shards"
READ_TIMEOUT_S = 1.0
CONSTANT = 2.5
VOCAB = ("protein cell gene tumor immune virus brain heart insulin receptor signal mutation drug trial "
         "therapy blood liver kidney enzyme membrane").split()


def fake_score(query: str, doc: str) -> float:
    """Query-token overlap plus a tiny deterministic, tie-free fraction of the document's hash."""
    q = set(re.findall(r"\w+", query.lower()))
    overlap = sum(1 for t in re.findall(r"\w+", doc.lower()) if t in q)
    return overlap + (zlib.crc32(doc.encode()) % 10007) / 100070.0


class FakeRanker:
    """Cohere-style /v1/rerank; ``mode`` in ok|constant|slow|garbage|wrong_count."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, object]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                docs = body["documents"]
                if outer.mode == "slow":
                    time.sleep(READ_TIMEOUT_S * 3)
                if outer.mode == "garbage":
                    payload = b'{"results": [{"index": 0, "relevance_sc'
                else:
                    results = [{"index": i, "relevance_score": CONSTANT if outer.mode == "constant" else
                                fake_score(body["query"], d)} for i, d in enumerate(docs)]
                    results.sort(key=lambda r: -r["relevance_score"])
                    if outer.mode == "wrong_count":
                        results = results[:-1]
                    payload = json.dumps({"id": "x", "results": results,
                                          "meta": {"model": "fake", "score": "raw_logit"}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def corpus(n: int = 80) -> list[Document]:
    rng = Random(7)
    return [Document(f"d{i:03d}", " ".join(rng.choices(VOCAB, k=3)), " ".join(rng.choices(VOCAB, k=rng.randint(8, 30))))
            for i in range(n)]


@pytest.fixture(scope="session")
def ranker() -> Iterator[FakeRanker]:
    fake = FakeRanker()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def node(ranker: FakeRanker):
    """A real node with a freshly built plugin; the distribution is cached under $DISTILRANK_HOME."""
    cfg = osp.NodeConfig()
    osp.stop(cfg)
    osp.install(cfg, osp.build_plugin())
    osp.start(cfg)
    client = osp.client(cfg.url)
    client.cluster.put_settings(body={"persistent": {
        "distilrank.ranker.endpoint": ranker.url,
        "distilrank.ranker.read_timeout": f"{int(READ_TIMEOUT_S * 1000)}ms",
        "distilrank.ranker.connect_timeout": "500ms",
        "distilrank.breaker.failure_threshold": 1000,
        "distilrank.breaker.open_duration": "0s",
    }})
    docs = corpus()
    for name, shards in ((INDEX, 1), (INDEX_2SHARDS, 2)):
        osp.create_index(client, name, shards=shards, recreate=True)
        osp.bulk_load(client, name, docs)
    yield client
    # The node's data dir is cached across sessions: do not leave it pointing at this test's ranker.
    client.cluster.put_settings(body={"persistent": {"distilrank.*": None}})
    osp.stop(cfg)


@pytest.fixture()
def ok_ranker(ranker: FakeRanker) -> Iterator[FakeRanker]:
    ranker.mode = "ok"
    ranker.requests.clear()
    yield ranker
    ranker.mode = "ok"


QUERY = "protein gene tumor insulin"


def search(client, params: osp.RescoreParams | None, size: int = 30, from_: int = 0, index: str = INDEX, **extra):
    body = osp.search_body(QUERY, size=size, params=params, from_=from_)
    body.update(extra)
    return client.search(index=index, body=body)["hits"]["hits"]


def fake_score_fn(query: str, docs: Sequence[str]) -> list[float]:
    return [fake_score(query, d) for d in docs]


def test_window_order_equals_ranker_order(node, ok_ranker: FakeRanker) -> None:
    params = osp.RescoreParams(window_size=20, query_weight=0.0, rescore_query_weight=1.0)
    first = search(node, None, size=20)
    rescored = search(node, params, size=20)
    texts = {h["_id"]: osp.document_text(h["_source"], params.fields) for h in first}
    expected = sorted(texts, key=lambda i: -fake_score(QUERY, texts[i]))
    assert [h["_id"] for h in rescored] == expected
    assert len(ok_ranker.requests) == 1 and len(ok_ranker.requests[0]["documents"]) == 20
    assert ok_ranker.requests[0]["return_documents"] is False


@pytest.mark.parametrize("score_mode", osp.SCORE_MODES)
@pytest.mark.parametrize(("qw", "rqw"), [(1.0, 1.0), (0.7, 1.3)])
def test_scores_follow_query_rescorer_arithmetic(node, ok_ranker: FakeRanker, score_mode: str, qw: float, rqw: float) -> None:
    params = osp.RescoreParams(window_size=10, query_weight=qw, rescore_query_weight=rqw, score_mode=score_mode)  # type: ignore[arg-type]
    first = search(node, None, size=30)
    rescored = search(node, params, size=30)
    expected = osp.rescore_hits(first, QUERY, params, fake_score_fn)
    assert [h["_id"] for h in rescored] == [doc_id for doc_id, _ in expected]
    for hit, (_, score) in zip(rescored, expected, strict=True):
        assert hit["_score"] == pytest.approx(score, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("score_mode", osp.SCORE_MODES)
def test_same_scores_as_native_query_rescorer(node, ok_ranker: FakeRanker, score_mode: str) -> None:
    """A ranker answering a constant equals a native rescore query that scores the same constant."""
    ok_ranker.mode = "constant"
    params = osp.RescoreParams(window_size=10, query_weight=0.7, rescore_query_weight=1.3, score_mode=score_mode)  # type: ignore[arg-type]
    ours = search(node, params, size=30)
    native = node.search(index=INDEX, body={**osp.search_body(QUERY, size=30), "rescore": {
        "window_size": 10, "query": {
            "rescore_query": {"constant_score": {"filter": {"match_all": {}}, "boost": CONSTANT}},
            "query_weight": 0.7, "rescore_query_weight": 1.3, "score_mode": score_mode}}})["hits"]["hits"]
    assert [(h["_id"], h["_score"]) for h in ours] == [(h["_id"], h["_score"]) for h in native]


def test_pagination_inside_window_is_consistent(node, ok_ranker: FakeRanker) -> None:
    params = osp.RescoreParams(window_size=30)
    whole = [h["_id"] for h in search(node, params, size=20)]
    pages = [h["_id"] for h in search(node, params, size=10)] + [h["_id"] for h in search(node, params, size=10, from_=10)]
    assert pages == whole


def test_one_batched_request_per_shard(node, ok_ranker: FakeRanker) -> None:
    search(node, osp.RescoreParams(window_size=5), size=10, index=INDEX_2SHARDS)
    assert len(ok_ranker.requests) == 2
    assert all(len(r["documents"]) == 5 for r in ok_ranker.requests)


def test_explain_names_both_scores(node, ok_ranker: FakeRanker) -> None:
    hit = search(node, osp.RescoreParams(window_size=10, score_mode="total"), size=1, explain=True)[0]
    text = json.dumps(hit["_explanation"])
    assert "distilrank score mode [total]" in text and "relevance_score" in text
    assert hit["_explanation"]["value"] == pytest.approx(hit["_score"], rel=1e-6)


def _stats(client) -> dict[str, object]:
    return client.transport.perform_request("GET", "/_plugins/distilrank/stats")


@pytest.mark.parametrize("mode", ["slow", "garbage", "wrong_count", "down"])
def test_ranker_failure_fails_open(node, ranker: FakeRanker, mode: str) -> None:
    first = search(node, None, size=20)
    before = _stats(node)
    ranker.mode = mode
    if mode == "down":  # nothing listens on this port
        node.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoint": "http://127.0.0.1:9"}})
    try:
        t0 = time.monotonic()
        hits = search(node, osp.RescoreParams(window_size=20), size=20)
        elapsed = time.monotonic() - t0
    finally:
        ranker.mode = "ok"
        node.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoint": ranker.url}})
    assert [(h["_id"], h["_score"]) for h in hits] == [(h["_id"], h["_score"]) for h in first]
    assert elapsed < READ_TIMEOUT_S + 5.0
    after = _stats(node)
    assert after["failures"] == before["failures"] + 1


def test_circuit_breaker_opens_and_skips_ranker(node, ranker: FakeRanker) -> None:
    node.cluster.put_settings(body={"persistent": {"distilrank.breaker.failure_threshold": 2,
                                                   "distilrank.breaker.open_duration": "60s"}})
    try:
        ranker.mode = "garbage"
        for _ in range(2):
            search(node, osp.RescoreParams(window_size=5), size=5)
        ranker.mode = "ok"
        ranker.requests.clear()
        first = search(node, None, size=5)
        hits = search(node, osp.RescoreParams(window_size=5), size=5)
        assert ranker.requests == []  # breaker open: ranker not called
        assert [h["_id"] for h in hits] == [h["_id"] for h in first]
        assert _stats(node)["breaker_open"] is True
    finally:
        ranker.mode = "ok"
        node.cluster.put_settings(body={"persistent": {"distilrank.breaker.failure_threshold": 1000,
                                                       "distilrank.breaker.open_duration": "0s"}})
    assert _stats(node)["breaker_open"] is False


@pytest.mark.parametrize(("clause", "reason"), [
    ({"fields": ["title"]}, r"non-empty \[query_text\]"),
    ({"query_text": "x"}, r"requires \[fields\]"),
    ({"query_text": "x", "fields": ["title"], "score_mode": "sum"}, r"illegal score_mode \[sum\]"),
    ({"query_text": "x", "fields": ["title"], "query_weight": "heavy"}, r"\[query_weight\] must be a number"),
    ({"query_text": "x", "fields": ["title"], "top_k": 3}, r"unknown parameter \[top_k\]"),
    ({"query_text": "x", "fields": [1]}, r"\[fields\] must be a list of strings"),
])
def test_bad_parameters_are_400(node, clause: dict[str, object], reason: str) -> None:
    body = {"query": {"match_all": {}}, "rescore": {"window_size": 5, "distilrank": clause}}
    with pytest.raises(opensearchpy.exceptions.RequestError, match=reason) as err:
        node.search(index=INDEX, body=body)
    assert err.value.status_code == 400


def test_client_side_rescoring_matches_plugin(node, ok_ranker: FakeRanker) -> None:
    params = osp.RescoreParams(window_size=15, query_weight=0.5, rescore_query_weight=2.0, score_mode="total")
    score_fn = osp.ranker_score_fn(ok_ranker.url)
    queries = {"q1": QUERY, "q2": "immune virus therapy", "q3": "blood liver kidney enzyme"}
    from distill.core.formats import Query

    qs = {qid: Query(qid, text) for qid, text in queries.items()}
    plugin = osp.run_queries(node, INDEX, qs, size=25, params=params)
    client_side = osp.run_queries(node, INDEX, qs, size=25, params=params, client_side=score_fn)
    for qid in qs:
        assert list(plugin[qid]) == list(client_side[qid])
        assert list(plugin[qid].values()) == pytest.approx(list(client_side[qid].values()), rel=1e-6)


def test_evaluate_cli_writes_runs_and_metrics(node, ok_ranker: FakeRanker, tmp_path) -> None:
    from click.testing import CliRunner

    from opensearch_plugin.cli import opensearch

    queries = {"q1": QUERY, "q2": "immune virus therapy"}
    (tmp_path / "queries.tsv").write_text("".join(f"{qid}\t{text}\n" for qid, text in queries.items()))
    docs = {d.doc_id: d.full_text for d in corpus()}
    qrels = []
    for qid, text in queries.items():
        best = sorted(docs, key=lambda i: -fake_score(text, docs[i]))[:3]
        qrels += [f"{qid} 0 {doc_id} 1\n" for doc_id in best]
    (tmp_path / "qrels.tsv").write_text("".join(qrels))
    out = tmp_path / "out"
    result = CliRunner().invoke(opensearch, [
        "evaluate", "--index", INDEX, "--queries", str(tmp_path / "queries.tsv"), "--qrels", str(tmp_path / "qrels.tsv"),
        "--out", str(out), "--ranker-url", ok_ranker.url, "--window-size", "30", "--size", "30",
        "--query-weight", "0", "--client-side"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"first_stage", "plugin_rescore", "client_rescore"}
    assert metrics["plugin_rescore"]["ndcg@10"] == pytest.approx(metrics["client_rescore"]["ndcg@10"])
    assert metrics["plugin_rescore"]["ndcg@10"] >= metrics["first_stage"]["ndcg@10"]
    assert (out / "plugin_rescore.trec").read_text().split()[1] == "Q0"


# --- the REAL ranker service (`distilrank serve`, tiny exported model) behind the plugin -------------
# Kept in this module so the session-scoped `node` fixture is instantiated once (importing a fixture
# into another module would register a second definition and restart the node).

DEMO = bundled_dataset().root
DEMO_INDEX = "distilrank-demo"


@pytest.fixture(scope="module")
def real_ranker(ranker_model_dir: Path) -> Iterator[str]:
    with serving(ranker_model_dir, "--threads", "1", "--scores", "raw", timeout=60) as url:
        yield url


@pytest.fixture(scope="module")
def pointed_at_real_ranker(node, ranker: FakeRanker, real_ranker: str):
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
