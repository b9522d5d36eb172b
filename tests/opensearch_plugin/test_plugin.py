"""The distilrank rescorer inside a real OpenSearch node (installed from Maven Central on first use).

The first half uses a deterministic stand-in ranker on 127.0.0.1 with switchable failure modes
(tests.opensearch_plugin.stand_in_ranker); the second half puts the real ranker service (`distilrank serve`)
behind the plugin: parity with client-side rescoring on the bundled data, one and two shards, an older card's
fallback, and failover between two replicas. Every test that needs the node lives in this module (one node).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from random import Random

import numpy as np
import pytest

from distill.cli import main
from distill.core.datasets import bundled_dataset
from distill.core.formats import Document, read_corpus, read_queries
from distill.core.interpolation import Interpolation
from ranker.process import serving, start_serve, stop_serve
from tests.opensearch_plugin.stand_in_ranker import CONSTANT, READ_TIMEOUT_S, FakeRanker, fake_score

# the first test's setup may fetch OpenSearch from Maven Central, build the plugin and start the node
pytestmark = [pytest.mark.opensearch, pytest.mark.integration, pytest.mark.timeout(1200)]

opensearchpy = pytest.importorskip("opensearchpy")

import opensearch_plugin as osp  # noqa: E402

INDEX = "distilrank-test"
INDEX_2SHARDS = "distilrank-test-2shards"
VOCAB = ("protein cell gene tumor immune virus brain heart insulin receptor signal mutation drug trial "
         "therapy blood liver kidney enzyme membrane").split()
#: the card the stand-in ranker's GET /info reports
FAKE_CARD = Interpolation(0.4, "minmax", "zscore", "dev_qrels", depth=12, score_convention="raw_logit")
NODE = osp.NodeConfig()
NODE_LOG = NODE.install_dir / "logs" / "distilrank.log"


def corpus(n: int = 80) -> list[Document]:
    rng = Random(7)
    return [Document(f"d{i:03d}", " ".join(rng.choices(VOCAB, k=3)), " ".join(rng.choices(VOCAB, k=rng.randint(8, 30))))
            for i in range(n)]


@pytest.fixture(scope="session")
def ranker() -> Iterator[FakeRanker]:
    fake = FakeRanker(FAKE_CARD.to_dict())
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def node(ranker: FakeRanker):
    """A real node with a freshly built plugin; the distribution is cached under $DISTILRANK_HOME."""
    cfg = NODE
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
FAKE_DEFAULTS = osp.ModelDefaults(FAKE_CARD, "raw_logit", "card-a", "stand-in")


def search(client, params: osp.RescoreParams | None, size: int = 30, from_: int = 0, index: str = INDEX, **extra):
    body = osp.search_body(QUERY, size=size, params=params, from_=from_)
    body.update(extra)
    return client.search(index=index, body=body)["hits"]["hits"]


def scored(hits: Sequence[dict[str, object]]) -> list[tuple[str, float]]:
    """``(id, score)`` with OpenSearch's float32 scores exactly (JSON carries their shortest decimal form)."""
    return [(str(h["_id"]), float(np.float32(h["_score"]))) for h in hits]


def fake_score_fn(query: str, docs: Sequence[str]) -> list[float]:
    return [fake_score(query, d) for d in docs]


def _stats(client) -> dict[str, object]:
    return client.transport.perform_request("GET", "/_plugins/distilrank/stats")


@contextmanager
def endpoints(client, urls: Sequence[str], read_timeout: str = "30s", **settings: object) -> Iterator[None]:
    """Point the plugin at ``urls`` (replicas); afterwards back at the stand-in the other tests use."""
    client.cluster.put_settings(body={"persistent": {"distilrank.ranker.endpoints": list(urls),
                                                     "distilrank.ranker.read_timeout": read_timeout, **settings}})
    try:
        yield
    finally:
        client.cluster.put_settings(body={"persistent": {
            "distilrank.ranker.endpoints": None, "distilrank.ranker.read_timeout": f"{int(READ_TIMEOUT_S * 1000)}ms",
            "distilrank.breaker.failure_threshold": 1000, "distilrank.breaker.open_duration": "0s"}})


def test_window_order_equals_ranker_order(node, ok_ranker: FakeRanker) -> None:
    params = osp.RescoreParams(window_size=20, score_mode="total", query_weight=0.0, rescore_query_weight=1.0)
    first = search(node, None, size=20)
    rescored = search(node, params, size=20)
    texts = {h["_id"]: osp.document_text(h["_source"], params.fields) for h in first}
    expected = sorted(texts, key=lambda i: -fake_score(QUERY, texts[i]))
    assert [h["_id"] for h in rescored] == expected
    assert len(ok_ranker.requests) == 1 and len(ok_ranker.requests[0]["documents"]) == 20
    assert ok_ranker.requests[0]["return_documents"] is False


@pytest.mark.parametrize("score_mode", osp.QUERY_RESCORER_MODES)
@pytest.mark.parametrize(("qw", "rqw"), [(1.0, 1.0), (0.7, 1.3)])
def test_scores_follow_query_rescorer_arithmetic(node, ok_ranker: FakeRanker, score_mode: str, qw: float,
                                                 rqw: float) -> None:
    params = osp.RescoreParams(window_size=10, query_weight=qw, rescore_query_weight=rqw,
                               score_mode=score_mode)  # type: ignore[arg-type]
    first = search(node, None, size=30)
    rescored = search(node, params, size=30)
    expected = osp.rescore_hits(first, QUERY, params, fake_score_fn)
    assert [h["_id"] for h in rescored] == [doc_id for doc_id, _ in expected]
    for hit, (_, score) in zip(rescored, expected, strict=True):
        assert hit["_score"] == pytest.approx(score, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("score_mode", osp.QUERY_RESCORER_MODES)
def test_same_scores_as_native_query_rescorer(node, ok_ranker: FakeRanker, score_mode: str) -> None:
    """A ranker answering a constant equals a native rescore query that scores the same constant."""
    ok_ranker.mode = "constant"
    params = osp.RescoreParams(window_size=10, query_weight=0.7, rescore_query_weight=1.3,
                               score_mode=score_mode)  # type: ignore[arg-type]
    ours = search(node, params, size=30)
    native = node.search(index=INDEX, body={**osp.search_body(QUERY, size=30), "rescore": {
        "window_size": 10, "query": {
            "rescore_query": {"constant_score": {"filter": {"match_all": {}}, "boost": CONSTANT}},
            "query_weight": 0.7, "rescore_query_weight": 1.3, "score_mode": score_mode}}})["hits"]["hits"]
    assert [(h["_id"], h["_score"]) for h in ours] == [(h["_id"], h["_score"]) for h in native]


def test_interpolate_by_default_with_the_cards_values(node, ok_ranker: FakeRanker) -> None:
    """No weight in the clause: the card's blend over its depth (12), exactly as rescore_hits computes it;
    hits below the window follow in first-stage order, under every rescored hit."""
    first = search(node, None, size=30)
    rescored = search(node, osp.RescoreParams(), size=30)
    assert len(ok_ranker.requests[-1]["documents"]) == FAKE_CARD.depth
    expected = osp.rescore_hits(first, QUERY, osp.RescoreParams(), fake_score_fn, FAKE_DEFAULTS)
    assert scored(rescored) == expected
    below = rescored[FAKE_CARD.depth:]
    assert [h["_id"] for h in below] == [h["_id"] for h in first[FAKE_CARD.depth:]]
    assert max(h["_score"] for h in below) < min(h["_score"] for h in rescored[:FAKE_CARD.depth])
    assert _stats(node)["model"]["interpolation"]["first_stage_weight"] == FAKE_CARD.first_stage_weight


@pytest.mark.parametrize("clause", [
    {"first_stage_weight": 0.9},
    {"window_size": 20, "first_stage_norm": "zscore", "ranker_norm": "minmax"},
    {"window_size": 8, "first_stage_weight": 0.2, "first_stage_norm": "none", "ranker_norm": "none",
     "score_convention": "sigmoid"},
])
def test_a_clause_overrides_any_card_value(node, ok_ranker: FakeRanker, clause: dict[str, object]) -> None:
    params = osp.RescoreParams(**clause)  # type: ignore[arg-type]
    first = search(node, None, size=30)
    rescored = search(node, params, size=30)
    expected = osp.rescore_hits(first, QUERY, params, fake_score_fn, FAKE_DEFAULTS)
    assert scored(rescored) == expected


def test_pagination_inside_window_is_consistent(node, ok_ranker: FakeRanker) -> None:
    params = osp.RescoreParams(window_size=30)
    whole = [h["_id"] for h in search(node, params, size=20)]
    pages = [h["_id"] for h in search(node, params, size=10)]
    pages += [h["_id"] for h in search(node, params, size=10, from_=10)]
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
    hits = search(node, osp.RescoreParams(window_size=5), size=8, explain=True)
    inside, outside = json.dumps(hits[0]["_explanation"]), json.dumps(hits[-1]["_explanation"])
    assert "distilrank score mode [interpolate]" in inside and "first_stage_weight=0.4" in inside
    assert "zscore of the ranker score over the window" in inside
    assert "outside the distilrank window" in outside
    for h in hits:
        assert h["_explanation"]["value"] == pytest.approx(h["_score"], rel=1e-6)


@pytest.mark.parametrize("mode", ["slow", "garbage", "wrong_count", "error503", "down"])
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
        search(node, osp.RescoreParams(window_size=5), size=5)  # the card's defaults are read and cached
        ranker.mode = "garbage"
        for _ in range(2):
            search(node, osp.RescoreParams(window_size=5), size=5)
        ranker.mode = "ok"
        ranker.requests.clear()
        first = search(node, None, size=5)
        hits = search(node, osp.RescoreParams(window_size=5), size=5)
        assert ranker.requests == []  # breaker open: ranker not called
        assert [h["_id"] for h in hits] == [h["_id"] for h in first]
        stats = _stats(node)
        assert stats["breaker_open"] is True and stats["endpoints"][0]["breaker_open"] is True
    finally:
        ranker.mode = "ok"
        node.cluster.put_settings(body={"persistent": {"distilrank.breaker.failure_threshold": 1000,
                                                       "distilrank.breaker.open_duration": "0s"}})
    assert _stats(node)["breaker_open"] is False


@pytest.mark.parametrize(("clause", "reason"), [
    ({"fields": ["title"]}, r"non-empty \[query_text\]"),
    ({"query_text": "x"}, r"requires \[fields\]"),
    ({"query_text": "x", "fields": ["title"], "score_mode": "sum"}, r"illegal score_mode \[sum\]"),
    ({"query_text": "x", "fields": ["title"], "score_mode": "total", "query_weight": "heavy"},
     r"\[query_weight\] must be a number"),
    ({"query_text": "x", "fields": ["title"], "top_k": 3}, r"unknown parameter \[top_k\]"),
    ({"query_text": "x", "fields": [1]}, r"\[fields\] must be a list of strings"),
    ({"query_text": "x", "fields": ["title"], "query_weight": 0.5}, r"apply to score_mode total"),
    ({"query_text": "x", "fields": ["title"], "score_mode": "max", "first_stage_weight": 0.5},
     r"apply to score_mode interpolate, not \[max\]"),
    ({"query_text": "x", "fields": ["title"], "first_stage_weight": 1.5}, r"must be a number in \[0, 1\]"),
    ({"query_text": "x", "fields": ["title"], "ranker_norm": "l2"}, r"illegal ranker_norm \[l2\]"),
    ({"query_text": "x", "fields": ["title"], "score_convention": "logit"}, r"illegal score_convention \[logit\]"),
])
def test_bad_parameters_are_400(node, clause: dict[str, object], reason: str) -> None:
    body = {"query": {"match_all": {}}, "rescore": {"window_size": 5, "distilrank": clause}}
    with pytest.raises(opensearchpy.exceptions.RequestError, match=reason) as err:
        node.search(index=INDEX, body=body)
    assert err.value.status_code == 400


@pytest.mark.parametrize("params", [
    osp.RescoreParams(window_size=15, query_weight=0.5, rescore_query_weight=2.0, score_mode="total"),
    osp.RescoreParams(),
    osp.RescoreParams(window_size=7, first_stage_norm="zscore"),
])
@pytest.mark.parametrize("index", [INDEX, INDEX_2SHARDS])
def test_client_side_rescoring_matches_plugin(node, ok_ranker: FakeRanker, params: osp.RescoreParams,
                                              index: str) -> None:
    from distill.core.formats import Query

    queries = {"q1": QUERY, "q2": "immune virus therapy", "q3": "blood liver kidney enzyme"}
    qs = {qid: Query(qid, text) for qid, text in queries.items()}
    with osp.RankerPool(ok_ranker.url) as pool:
        plugin = osp.run_queries(node, index, qs, size=25, params=params)
        client_side = osp.run_queries(node, index, qs, size=25, params=params, client_side=pool)
    for qid in qs:
        assert list(plugin[qid]) == list(client_side[qid])
        assert list(plugin[qid].values()) == pytest.approx(list(client_side[qid].values()), rel=1e-6)


def _evaluate_files(tmp_path: Path) -> tuple[Path, Path]:
    queries = {"q1": QUERY, "q2": "immune virus therapy"}
    (tmp_path / "queries.tsv").write_text("".join(f"{qid}\t{text}\n" for qid, text in queries.items()))
    docs = {d.doc_id: d.full_text for d in corpus()}
    qrels = []
    for qid, text in queries.items():
        best = sorted(docs, key=lambda i: -fake_score(text, docs[i]))[:3]
        qrels += [f"{qid} 0 {doc_id} 1\n" for doc_id in best]
    (tmp_path / "qrels.tsv").write_text("".join(qrels))
    return tmp_path / "queries.tsv", tmp_path / "qrels.tsv"


@pytest.mark.parametrize("flags", [["--window-size", "30", "--score-mode", "total", "--query-weight", "0"], []])
def test_evaluate_cli_writes_runs_and_metrics(node, ok_ranker: FakeRanker, tmp_path: Path, flags: list[str]) -> None:
    from click.testing import CliRunner

    from opensearch_plugin.cli import opensearch

    queries, qrels = _evaluate_files(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(opensearch, [
        "evaluate", "--index", INDEX, "--queries", str(queries), "--qrels", str(qrels), "--out", str(out),
        "--ranker-url", ok_ranker.url, "--size", "30", "--client-side", *flags])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"first_stage", "plugin_rescore", "client_rescore"}
    assert metrics["plugin_rescore"]["ndcg@10"] == pytest.approx(metrics["client_rescore"]["ndcg@10"])
    assert metrics["plugin_rescore"]["ndcg@10"] >= metrics["first_stage"]["ndcg@10"]
    assert (out / "plugin_rescore.trec").read_text().split()[1] == "Q0"
    applied = json.loads((out / "rescore.json").read_text())
    if not flags:  # no flags: both paths applied the served card's blend
        plugin, client_side = applied["plugin"]["interpolation"], applied["client_side"]["interpolation"]
        assert plugin == {k: client_side[k] for k in plugin}
        assert applied["client_side"]["interpolation"]["first_stage_weight"] == FAKE_CARD.first_stage_weight


def test_rescore_clause_cli_prints_the_cards_values(node, ok_ranker: FakeRanker, capsys) -> None:
    assert main(["opensearch", "rescore-clause", "--ranker-url", ok_ranker.url, "--query-text", QUERY]) == 0
    clause = json.loads(capsys.readouterr().out)["rescore"]
    assert clause["window_size"] == FAKE_CARD.depth
    assert clause["distilrank"] == {"query_text": QUERY, "fields": ["title", "text"], "score_mode": "interpolate",
                                    "first_stage_weight": 0.4, "first_stage_norm": "minmax", "ranker_norm": "zscore",
                                    "score_convention": "raw_logit"}
    ours = search(node, osp.RescoreParams(), size=20)
    pasted = node.search(index=INDEX, body={**osp.search_body(QUERY, size=20), "rescore": clause})["hits"]["hits"]
    assert [(h["_id"], h["_score"]) for h in pasted] == [(h["_id"], h["_score"]) for h in ours]


# --- the REAL ranker service (`distilrank serve`, tiny exported model) behind the plugin -------------
# Kept in this module so the session-scoped `node` fixture is instantiated once (importing a fixture
# into another module would register a second definition and restart the node).

DEMO = bundled_dataset()
DEMO_INDEX = "distilrank-demo"
DEMO_INDEX_2SHARDS = "distilrank-demo-2shards"
#: the blend a pipeline would have recorded in the served model's card
SERVED_CARD = Interpolation(0.3, "minmax", "zscore", "dev_qrels", depth=20, score_convention="raw_logit")


@pytest.fixture(scope="module")
def real_ranker(ranker_model_dir: Path) -> Iterator[str]:
    """An older export: its card has no interpolation; served as raw logits."""
    with serving(ranker_model_dir, "--threads", "1", "--scores", "raw", timeout=60) as url:
        yield url


@pytest.fixture(scope="module")
def served_model_dir(ranker_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny export with :data:`SERVED_CARD` in its card, as the pipeline's serve stage leaves it."""
    from distill.core.model_card import set_interpolation

    out = tmp_path_factory.mktemp("served") / "serve"
    shutil.copytree(ranker_model_dir, out)
    set_interpolation(out, SERVED_CARD)
    return out


@pytest.fixture(scope="module")
def served_ranker(served_model_dir: Path) -> Iterator[str]:
    with serving(served_model_dir, "--threads", "1", timeout=60) as url:
        yield url


@pytest.fixture(scope="module")
def demo_indexes(node) -> dict[int, str]:
    """The bundled corpus with the english analyzer, in one and in two shards (built once, reused)."""
    for name, shards in ((DEMO_INDEX, 1), (DEMO_INDEX_2SHARDS, 2)):
        info = osp.ensure_index(NODE.url, name, DEMO.corpus, shards=shards)
        assert info.documents == len(read_corpus(DEMO.corpus))
    return {1: DEMO_INDEX, 2: DEMO_INDEX_2SHARDS}


@pytest.fixture()
def pointed_at_real_ranker(node, real_ranker: str) -> Iterator[object]:
    with endpoints(node, [real_ranker]):
        yield node


def _top10_parity(node, index: str, ranker_url: str, params: osp.RescoreParams) -> dict[str, list[tuple[str, float]]]:
    """Every bundled test query through the plugin and client-side; returns the plugin's top 10 per query."""
    queries = read_queries(DEMO.test_queries)
    with osp.RankerPool(ranker_url, timeout=30) as pool:
        plugin = osp.run_queries(node, index, queries, size=10, params=params)
        client_side = osp.run_queries(node, index, queries, size=10, params=params, client_side=pool)
    assert set(plugin) == set(client_side) == set(queries)
    for qid in queries:
        assert list(plugin[qid].items()) == list(client_side[qid].items()), qid
    return {qid: list(run.items()) for qid, run in plugin.items()}


def test_parity_plugin_and_client_side_on_the_bundled_data(node, served_ranker: str, demo_indexes) -> None:
    """No weight flags: the plugin and client-side rescoring apply the served card's blend and return the
    same top 10 (same float32 scores) on every bundled test query; a pasted explicit clause is the same."""
    with endpoints(node, [served_ranker]):
        top10 = _top10_parity(node, demo_indexes[1], served_ranker, osp.RescoreParams())
        explicit = osp.RescoreParams(**{k: getattr(SERVED_CARD, k) for k in
                                        ("first_stage_weight", "first_stage_norm", "ranker_norm", "score_convention")},
                                     window_size=SERVED_CARD.depth)
        assert _top10_parity(node, demo_indexes[1], served_ranker, explicit) == top10
        model = _stats(node)["model"]
    assert model["fallback"] is False and model["interpolation"]["first_stage_weight"] == 0.3
    first = osp.run_queries(node, demo_indexes[1], read_queries(DEMO.test_queries), size=10)
    assert sum(list(first[q]) != [d for d, _ in top10[q]] for q in top10) > 0  # the rescore changed rankings


def test_two_shards_each_window_is_normalised_on_its_own(node, served_ranker: str, demo_indexes) -> None:
    """Two shards: the plugin blends each shard's window (its own min-max and z-scores), client-side rescoring
    does the same per shard, and the two agree; treating the merged hits as one window would not."""
    with endpoints(node, [served_ranker]):
        top10 = _top10_parity(node, demo_indexes[2], served_ranker, osp.RescoreParams())
    queries = read_queries(DEMO.test_queries)
    os_client = node
    differs = 0
    with osp.RankerPool(served_ranker, timeout=30) as pool:
        defaults = pool.model_defaults()
        for qid, q in list(queries.items())[:20]:
            hits = osp.shard_hits(os_client, demo_indexes[2], q.text, SERVED_CARD.depth, shards=2)
            merged = sorted(hits, key=lambda h: -h["_score"])
            as_one = osp.rescore_hits([{k: v for k, v in h.items() if k != "_shard"} for h in merged], q.text,
                                      osp.RescoreParams(), pool, defaults)[:10]
            differs += as_one != top10[qid]
    assert differs > 0


def test_an_older_card_falls_back_to_the_documented_defaults(pointed_at_real_ranker, real_ranker: str,
                                                             demo_indexes) -> None:
    """A card without an interpolation: w 0.6, zscore/zscore, window 20 over the served scores, a warning in
    the node log, and client-side rescoring does the same."""
    top10 = _top10_parity(pointed_at_real_ranker, demo_indexes[1], real_ranker, osp.RescoreParams())
    model = _stats(pointed_at_real_ranker)["model"]
    assert model["fallback"] is True
    assert model["interpolation"] | {"chosen_by": "default"} == {
        "first_stage_weight": 0.6, "first_stage_norm": "zscore", "ranker_norm": "zscore", "depth": 20,
        "score_convention": "raw_logit", "chosen_by": "default"}
    assert "without an interpolation (an older export)" in NODE_LOG.read_text()
    assert len(top10) == len(read_queries(DEMO.test_queries))


def test_failover_between_two_rankers_when_one_is_stopped(node, served_model_dir: Path, demo_indexes) -> None:
    """Two replicas, round robin; one is stopped: every search is still rescored (same results as with both),
    the stopped replica's breaker opens and the stats show the failover; client-side rescoring too."""
    queries = list(read_queries(DEMO.test_queries).values())[:12]
    params = osp.RescoreParams()
    proc_a, url_a = start_serve(served_model_dir, "--threads", "1", timeout=60)
    proc_b, url_b = start_serve(served_model_dir, "--threads", "1", timeout=60)
    try:
        with endpoints(node, [url_a, url_b], **{"distilrank.breaker.failure_threshold": 2,
                                                "distilrank.breaker.open_duration": "60s"}):
            before = {q.qid: search_demo(node, q.text, params) for q in queries}
            start = _stats(node)
            assert all(e["successes"] > 0 for e in start["endpoints"])  # round robin used both
            stop_serve(proc_a)
            after = {q.qid: search_demo(node, q.text, params) for q in queries}
            stats = _stats(node)
        with osp.RankerPool([url_a, url_b], timeout=5, failure_threshold=2) as pool:
            client_side = osp.run_queries(node, DEMO_INDEX, {q.qid: q for q in queries}, size=10, params=params,
                                          client_side=pool)
            pool_stats = pool.stats()
    finally:
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                stop_serve(proc)
    assert after == before
    assert {qid: list(run.items()) for qid, run in client_side.items()} == after
    stopped = next(e for e in stats["endpoints"] if e["url"] == url_a)
    assert stopped["breaker_open"] is True and stopped["failures_by_kind"] == {"connection": 2}
    assert stats["failovers"] - start["failovers"] == 2 and stats["failures"] == start["failures"]
    assert pool_stats["failures"] == 0 and pool_stats["failovers"] >= 1
    assert pool_stats["endpoints"][0]["breaker_open"] is True


def search_demo(client, text: str, params: osp.RescoreParams) -> list[tuple[str, float]]:
    hits = client.search(index=DEMO_INDEX, body=osp.search_body(text, 10, params))["hits"]["hits"]
    return scored(hits)


def test_replicas_serving_different_cards_are_logged(node, served_ranker: str, real_ranker: str, demo_indexes) -> None:
    with endpoints(node, [served_ranker, real_ranker]):
        for text in ("protein folding", "cancer therapy", "vitamin D"):
            search_demo(node, text, osp.RescoreParams())
        stats = _stats(node)
    assert stats["model"]["source"] == served_ranker and stats["card_mismatch"] is True
    assert "ranker replicas serve different models" in NODE_LOG.read_text()


def test_retrieve_opensearch_writes_the_engines_run(node, demo_indexes, tmp_path: Path) -> None:
    from distill.core.formats import read_run

    out = tmp_path / "run.trec"
    assert main(["retrieve", "opensearch", "--url", NODE.url, "--index", DEMO_INDEX, "--queries",
                 str(DEMO.test_queries), "--top-k", "25", "--out", str(out), "--corpus", str(DEMO.corpus)]) == 0
    run = read_run(out)
    direct = osp.retrieve_run(NODE.url, DEMO_INDEX, read_queries(DEMO.test_queries), 25)
    assert set(run) == set(direct) and all(len(docs) <= 25 for docs in run.values())
    for qid, docs in direct.items():
        assert list(run[qid]) == sorted(docs, key=lambda d: (-docs[d], d))
    assert osp.ensure_index(NODE.url, DEMO_INDEX, DEMO.corpus).reused  # built from the same file: reused
    stemmed = node.indices.analyze(index=DEMO_INDEX, body={"field": "text", "text": "proteins binding"})
    assert [t["token"] for t in stemmed["tokens"]] == ["protein", "bind"]


def test_retrieve_opensearch_refuses_an_index_it_did_not_build_and_a_missing_one(node, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run.trec"
    args = ["retrieve", "opensearch", "--url", NODE.url, "--queries", str(DEMO.test_queries), "--out", str(out)]
    assert main([*args, "--index", "no-such-index"]) == 3
    assert "no-such-index" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--index", INDEX, "--corpus", str(DEMO.corpus)]) == 2
    assert "was not built by distilrank" in capsys.readouterr().err


def test_plugin_order_equals_real_ranker_order(pointed_at_real_ranker, real_ranker: str) -> None:
    from ranker.client import RerankClient

    params = osp.RescoreParams(window_size=15, score_mode="total", query_weight=0.0, rescore_query_weight=1.0)
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


def test_locust_opensearch_scenario_against_plugin_and_real_ranker(pointed_at_real_ranker, demo_indexes,
                                                                   tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    slo = {"scenario": "opensearch", "total": {"p95_ms": 30000, "max_error_ratio": 0.0},
           "endpoints": {"POST /_search+rescore": {"p99_ms": 30000}}}
    (tmp_path / "slo.json").write_text(json.dumps(slo))
    code = main(["loadtest", "--scenario", "opensearch", "--host", NODE.url, "--index", DEMO_INDEX,
                 "--users", "2", "--spawn-rate", "2", "--run-time", "6s", "--passages", "10",
                 "--slo", str(tmp_path / "slo.json"), "--out", str(tmp_path / "out")])
    assert code == 0, capfd.readouterr().err[-3000:]
    result = json.loads((tmp_path / "out" / "slo_result.json").read_text())
    assert result["measured"]["POST /_search+rescore"]["requests"] > 0
    assert result["measured"]["POST /_search+rescore"]["failures"] == 0


def test_the_pipeline_report_is_what_opensearch_returns(node, demo_indexes, tmp_path: Path) -> None:
    """One path from data to OpenSearch: the pipeline (tiny preset, every bundled test query) takes the serving
    index as its first stage and ends in OUT/serve; `distilrank serve --model OUT/serve` behind the plugin and
    `distilrank opensearch evaluate` with no weight or mode flags (the window is the card's: the report's rerank
    depth; one shard) return, on every eval query, the top 10 of the report's student_interpolated run, and the
    same nDCG@10 within 0.001."""
    from distill.core.evaluation import evaluate
    from distill.core.formats import read_qrels, read_run

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"eval": {"max_queries": 0}}))
    out = tmp_path / "run"
    assert main(["pipeline", "--preset", "tiny", "--config", str(cfg), "--allow-regression", "--first-stage",
                 "opensearch", "--opensearch-url", NODE.url, "--index", demo_indexes[1], "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["artifacts"]["serve"] == str(out / "serve") and report["first_stage"]["kind"] == "opensearch"
    depth = report["rerank_depth"]["student"]
    assert report["interpolation"]["depth"] == depth
    pipeline_run = read_run(report["artifacts"]["runs"]["student_interpolated"])
    with serving(out / "serve", "--threads", "1", timeout=60) as url, endpoints(node, [url]):
        assert main(["opensearch", "evaluate", "--index", demo_indexes[1], "--queries", str(DEMO.test_queries),
                     "--qrels", str(DEMO.test_qrels), "--out", str(tmp_path / "os"), "--ranker-url", url,
                     "--size", str(depth), "--client-side"]) == 0
    applied = json.loads((tmp_path / "os" / "rescore.json").read_text())
    assert applied["plugin"]["fallback"] is False and applied["plugin"]["interpolation"]["depth"] == depth
    qrels = read_qrels(DEMO.test_qrels)
    assert set(pipeline_run) == {q for q in read_queries(DEMO.test_queries) if q in qrels}
    for name in ("plugin_rescore", "client_rescore"):
        served = read_run(tmp_path / "os" / f"{name}.trec")
        for qid, docs in pipeline_run.items():
            assert list(served[qid])[:10] == list(docs)[:10], (name, qid)
        ours = evaluate(qrels, pipeline_run, ["ndcg@10"]).metrics["ndcg@10"]
        theirs = evaluate(qrels, {q: served[q] for q in pipeline_run}, ["ndcg@10"]).metrics["ndcg@10"]
        assert (abs(ours - theirs) <= 1e-3
                and ours == pytest.approx(report["metrics"]["student_interpolated"]["ndcg@10"]))
