"""Teacher sources: bm25, dense, run, endpoint (against local stand-in servers, down/slow/garbage), llm (qlm),
the ensemble's weight fitting, and labelling from each source with resume."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.bm25 import BM25Index
from distill.core.errors import ConfigError, DataError
from distill.core.formats import Query, read_corpus, read_qrels, read_queries, write_run
from distill.core.label_files import read_labels
from distill.teacher.config import LabelConfig
from distill.teacher.label import run_label
from distill.teacher.sources import (
    BM25Source,
    EndpointConfig,
    EndpointError,
    EndpointSource,
    EnsembleSource,
    RunSource,
    fit_weights,
    zscore_run,
)


@pytest.fixture(scope="module")
def mini(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """4 training queries, their qrels, and a 200-document corpus (their positives + the first docs)."""
    from tests.teacher_data import write_mini

    return write_mini(demo_data, tmp_path_factory.mktemp("mini"), n_queries=4, n_extra_docs=200)


def test_zscore_and_bm25_source_scores_any_candidate(demo_data: Path) -> None:
    corpus = read_corpus(demo_data / "corpus.jsonl")
    index = BM25Index(corpus)
    q = {"q": Query("q", "cancer cell apoptosis")}
    top = index.search(q, top_k=3)["q"]
    far = [d for d in corpus if d not in top][:2]
    scores = BM25Source(corpus, index).score(q, {"q": [*top, *far]})["q"]
    for d in top:
        assert scores[d] == pytest.approx(top[d], rel=1e-5)  # same numbers as retrieval
    z = zscore_run({"q": {"a": 1.0, "b": 3.0}, "e": {"c": 2.0}})
    assert z == {"q": {"a": -1.0, "b": 1.0}, "e": {"c": 0.0}}


def test_run_source_puts_unranked_below_the_last(tmp_path: Path) -> None:
    path = write_run(tmp_path / "t.trec", {"q": {"a": 5.0, "b": 2.0}})
    src = RunSource(path)
    assert src.candidates("q", 1) == ["a"]
    assert src.score({}, {"q": ["a", "b", "zzz"]})["q"] == {"a": 5.0, "b": 2.0, "zzz": 1.0}
    with pytest.raises(DataError, match="no results for query 'other'"):
        src.score({}, {"other": ["a"]})


def test_fit_weights_prefers_the_informative_member_and_drops_noise() -> None:
    qrels = {f"q{i}": {"rel": 1} for i in range(20)}
    good = {q: {"rel": 2.0, "x": 1.0, "y": 0.5} for q in qrels}
    noise = {q: {"rel": (i % 3) - 1.0, "x": 0.3, "y": 0.2} for i, q in enumerate(qrels)}
    weights, alone = fit_weights({"good": good, "noise": noise}, qrels)
    assert alone["good"] == pytest.approx(1.0) and alone["noise"] < 1.0
    assert weights == {"good": 1.0, "noise": 0.0}
    with pytest.raises(DataError, match="no dev query"):
        fit_weights({"good": good}, {"other": {"d": 1}})


def test_only_slow_members_must_beat_dev_noise() -> None:
    """A member that adds a few points on noisy fit queries: kept when it is cheap (dense, BM25), dropped when it
    is slow (the LLM) and the gain is within 2 standard errors. (The small preset on SciFact: dense added 3.4
    points on 50 fit queries, 2 SE were 6.1, and the teacher became BM25 alone.)"""
    qrels = {f"q{i}": {"rel": 1} for i in range(12)}
    base = {q: {"x": 2.0, "rel": 1.0, "y": 0.5} for q in qrels}  # rel second: reciprocal rank 0.5 everywhere
    # the helper fixes 3 of 12 queries and costs 1 other a rank: a real but noisy gain
    helper = {q: ({"rel": 3.0, "x": 0.0, "y": 1.0} if i < 3 else
                  {"x": 0.0, "y": 3.0, "rel": 0.0} if i == 3 else {"x": 1.0, "rel": 1.0, "y": 1.0})
              for i, q in enumerate(qrels)}
    cheap, alone = fit_weights({"bm25": base, "dense": helper}, qrels)
    assert cheap["dense"] > 0 and cheap["bm25"] > 0, (cheap, alone)
    slow, _ = fit_weights({"bm25": base, "llm": helper}, qrels)
    assert slow == {"bm25": 1.0, "llm": 0.0}


def test_ensemble_never_calls_a_zero_weight_member() -> None:
    class Boom:
        name = "boom"

        def score(self, queries, candidates):  # noqa: ANN001, ANN201
            raise AssertionError("a member with weight 0 was called")

    class Const:
        name = "const"

        def score(self, queries, candidates):  # noqa: ANN001, ANN201
            return {q: {d: float(i) for i, d in enumerate(ds)} for q, ds in candidates.items()}

    ens = EnsembleSource({"boom": Boom(), "const": Const()}, {"boom": 0.0, "const": 1.0})
    assert ens.score({}, {"q": ["a", "b"]})["q"]["b"] > 0
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        EnsembleSource({"const": Const()}, {"const": -1.0})


# --- the endpoint source against local stand-in rerank servers -------------------------------------------------

class _Rerank(BaseHTTPRequestHandler):
    mode = "ok"
    calls = 0

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        cls = type(self)
        cls.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if cls.mode == "slow":
            time.sleep(1.5)
        if cls.mode == "garbage" or (cls.mode == "garbage_after_1" and cls.calls > 1):
            self._send(200, b"<html>gateway says hi</html>")
            return
        if cls.mode == "flaky" and cls.calls % 2 == 1:
            self._send(503, b'{"error": "busy"}', {"Retry-After": "0"})
            return
        if cls.mode == "auth" and self.headers.get("Authorization") != "Bearer k":
            self._send(401, b'{"error": "no"}')
            return
        words = set(body["query"].lower().split())
        results = [{"index": i, "relevance_score": float(len(words & set(d.lower().split())))}
                   for i, d in enumerate(body["documents"])]
        self._send(200, json.dumps({"results": results[::-1]}).encode())

    def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client timed out and left (the "slow" case): not this test's business


@contextmanager
def stand_in(mode: str) -> Iterator[str]:
    handler = type("H", (_Rerank,), {"mode": mode, "calls": 0})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/rerank"
    finally:
        server.shutdown()
        server.server_close()


def _endpoint_cfg(mini: dict[str, Path], url: str, **kw: object) -> LabelConfig:
    fields: dict[str, object] = {"endpoint_retries": 2, "endpoint_timeout_s": 1.0, "endpoint_batch_size": 4,
                                 "n_bm25": 5, "n_dense": 0, "n_random": 2, **kw}
    return LabelConfig(source="endpoint", endpoint_url=url, queries=str(mini["queries"]), corpus=str(mini["corpus"]),
                       **fields)  # type: ignore[arg-type]


def test_endpoint_labels_batches_and_reorders(mini: dict[str, Path], tmp_path: Path) -> None:
    with stand_in("flaky") as url:  # every other call is a 503: retried with backoff
        labels = read_labels(run_label(_endpoint_cfg(mini, url), tmp_path / "l"))
    corpus = read_corpus(mini["corpus"])
    assert len(labels) == 4
    rec = labels[0]
    words = set(rec.query.lower().split())
    for d in rec.docs:  # the response's reversed order was put back by index
        assert d.score == len(words & set(corpus[d.doc_id].full_text[:4000].lower().split()))


@pytest.mark.parametrize(("mode", "match"), [("down", "failed 3 times"), ("slow", "failed 3 times"),
                                             ("garbage", "not a rerank response"), ("auth", "refused the request")])
def test_endpoint_failures_are_clear_and_keep_labels(mode: str, match: str, mini: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l"
    if mode == "down":
        url = "http://127.0.0.1:9/v1/rerank"  # discard port: nothing listens
        args = []
    else:
        ctx = stand_in(mode)
        url = ctx.__enter__()
        args = [ctx]
    try:
        code = main(["teacher", "label", "--source", "endpoint", "--endpoint-url", url, "--endpoint-retries", "2",
                     "--queries", str(mini["queries"]), "--corpus", str(mini["corpus"]), "--n-bm25", "5",
                     "--n-dense", "0", "--n-random", "1", "--config", str(_timeout_cfg(tmp_path)), "--out", str(out)])
    finally:
        for c in args:
            c.__exit__(None, None, None)
    err = capsys.readouterr().err
    assert code == 3 and match in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()


def _timeout_cfg(tmp_path: Path) -> Path:
    path = tmp_path / "label.json"
    path.write_text(json.dumps({"endpoint_timeout_s": 0.5}))
    return path


def test_endpoint_dies_mid_run_and_resume_finishes(mini: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "l"
    with stand_in("garbage_after_1") as url, pytest.raises(EndpointError):  # one request per query, then garbage
        run_label(_endpoint_cfg(mini, url, endpoint_batch_size=32), out)
    kept = read_labels(out / "labels.jsonl")
    assert len(kept) == 1  # the first query's labels survived the failure
    with stand_in("ok") as url2:
        # same config except the URL: the label file is the resume unit, whatever the endpoint's address
        path = run_label(_endpoint_cfg(mini, url2, endpoint_batch_size=32), out)
    labels = read_labels(path)
    assert [r.qid for r in labels][:1] == [kept[0].qid] and len({r.qid for r in labels}) == 4


def test_endpoint_config_errors() -> None:
    with pytest.raises(ConfigError, match="must start with http"):
        EndpointConfig(url="localhost:8080")
    with pytest.raises(ConfigError, match="api_key is empty"):
        EndpointConfig(url="http://x", api_key=" ")


def test_endpoint_api_key_is_sent_and_never_written(mini: dict[str, Path], tmp_path: Path) -> None:
    with stand_in("auth") as url:
        path = run_label(_endpoint_cfg(mini, url, endpoint_api_key="k"), tmp_path / "l")
        src = EndpointSource(read_corpus(mini["corpus"]), EndpointConfig(url=url, api_key="k"))
        assert src.score({"q": Query("q", "x")}, {"q": []}) == {"q": {}}
    assert len(read_labels(path)) == 4
    assert '"k"' not in (tmp_path / "l" / "config.json").read_text()


def test_label_from_bm25_dense_run_and_shards(mini: dict[str, Path], tmp_path: Path,
                                              tiny_cross_encoder_dir: Path) -> None:
    base = {"queries": str(mini["queries"]), "corpus": str(mini["corpus"]), "n_bm25": 5, "n_dense": 3, "n_random": 1,
            "dense_model": str(tiny_cross_encoder_dir)}
    bm25_labels = read_labels(run_label(LabelConfig(source="bm25", **base), tmp_path / "bm25"))
    dense_labels = read_labels(run_label(LabelConfig(source="dense", **base), tmp_path / "dense"))
    assert len(bm25_labels) == len(dense_labels) == 4
    assert all(-1.0 - 1e-6 <= d.score <= 1.0 + 1e-6 for r in dense_labels for d in r.docs)  # cosine
    # a TREC run as the teacher: its top-k are the candidates, its scores the labels
    run = {r.qid: {d.doc_id: d.score for d in r.docs} for r in bm25_labels}
    run_path = write_run(tmp_path / "teacher.trec", run)
    from_run = read_labels(run_label(LabelConfig(source="run", run=str(run_path), run_depth=3, **base),
                                     tmp_path / "run"))
    for r in from_run:
        assert len(r.docs) == 3 and all(d.source == "run" for d in r.docs)
        assert {d.doc_id: d.score for d in r.docs} == pytest.approx(
            dict(sorted(run[r.qid].items(), key=lambda kv: -kv[1])[:3]), abs=1e-5)
    # shards are disjoint and together cover every query
    shards = [read_labels(run_label(LabelConfig(source="bm25", shard=f"{i}/2", **base), tmp_path / f"s{i}"))
              for i in range(2)]
    ids = [r.qid for s in shards for r in s]
    assert sorted(ids) == sorted(r.qid for r in bm25_labels) and len(set(ids)) == len(ids)


def test_ensemble_label_fits_weights_and_records_them(mini: dict[str, Path], tmp_path: Path,
                                                      tiny_cross_encoder_dir: Path) -> None:
    cfg = LabelConfig(source="ensemble", members=("dense", "bm25"), queries=str(mini["queries"]),
                      corpus=str(mini["corpus"]), qrels=str(mini["qrels"]), n_bm25=5, n_dense=3, n_random=1,
                      fit_queries=10, dense_model=str(tiny_cross_encoder_dir))
    path = run_label(cfg, tmp_path / "ens")
    info = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    # 4 queries with qrels < 5: too few to fit, equal weights, and the file says so
    assert info["weights"] == {"dense": 0.5, "bm25": 0.5} and "too few" in info["fitted_on"]
    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    assert manifest["ensemble"]["weights"] == info["weights"]
    assert len(read_labels(path)) == 4
    qrels = read_qrels(mini["qrels"])
    for rec in read_labels(path):
        assert all(math.isfinite(d.score) for d in rec.docs)
        assert {d.doc_id for d in rec.docs if "positive" in d.source} == {d for d, r in qrels[rec.qid].items() if r > 0}


def test_ensemble_shards_fit_on_the_same_queries(mini: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shard chooses its fit queries from all the queries, not from its own slice, so the shards' label
    files are scored with the same weights and concatenate into one labelling."""
    import distill.teacher.label as label_mod

    seen: list[list[str]] = []
    real = label_mod.ensemble_fit_qids

    def spy(qids, qrels, n):  # noqa: ANN001, ANN202
        seen.append(sorted(qids))
        return real(qids, qrels, n)

    monkeypatch.setattr(label_mod, "ensemble_fit_qids", spy)
    base = {"source": "ensemble", "members": ("bm25",), "queries": str(mini["queries"]), "corpus": str(mini["corpus"]),
            "qrels": str(mini["qrels"]), "n_bm25": 5, "n_dense": 0, "n_random": 1}
    shards = [read_labels(run_label(LabelConfig(shard=f"{i}/2", **base), tmp_path / f"s{i}")) for i in range(2)]
    assert all(shards) and len(seen) == 2 and seen[0] == seen[1] == sorted(read_queries(mini["queries"]))


def test_ensemble_never_builds_a_zero_weight_member(mini: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A member weighted 0 (e.g. a slow LLM the fit dropped) is never built: not on the first run, not on resume."""
    from distill.teacher.label import SourceFactory

    built: list[str] = []
    real_build = SourceFactory.build

    def spy(self, name):  # noqa: ANN001, ANN202
        built.append(name)
        return real_build(self, name)

    monkeypatch.setattr(SourceFactory, "build", spy)
    cfg = LabelConfig(source="ensemble", members=("dense", "bm25"), weights={"dense": 0.0, "bm25": 1.0},
                      queries=str(mini["queries"]), corpus=str(mini["corpus"]), n_bm25=5, n_dense=0, n_random=1)
    run_label(cfg, tmp_path / "ens")
    (tmp_path / "ens" / "manifest.json").unlink()  # force the resume path (ensemble.json kept)
    run_label(cfg, tmp_path / "ens")
    assert built and set(built) == {"bm25"}
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["weights"] == {"dense": 0.0, "bm25": 1.0}


def test_qlm_scores_are_finite_and_batch_invariant(tiny_decoder_dir: Path) -> None:
    from distill.teacher.qlm import QueryLikelihoodScorer

    triples = [("fever cause", "Fever", "Fever is caused by pyrogens."), ("x", "", "word " * 300),
               ("a b c", "T", "short")]
    one = QueryLikelihoodScorer(tiny_decoder_dir, batch_size=1, max_length=64, device="cpu").score_triples(triples)
    many = QueryLikelihoodScorer(tiny_decoder_dir, batch_size=3, max_length=64, device="cpu").score_triples(triples)
    assert all(math.isfinite(s) and s < 0 for s in one)  # mean log-probabilities
    assert many == pytest.approx(one, abs=1e-4)


@pytest.mark.integration
def test_distilrank_serve_is_a_teacher_endpoint(mini: dict[str, Path], tmp_path: Path, ranker_runtime) -> None:  # noqa: ANN001
    """A (larger) model served by `distilrank serve` labels through the endpoint source: the labels equal
    the runtime's own raw scores (the server is started with scores=raw)."""
    from ranker.server import ServerConfig, create_app
    from tests.ranker_fixtures import running_server

    app = create_app(ranker_runtime, ServerConfig(scores="raw"))
    with running_server(app) as base:
        path = run_label(_endpoint_cfg(mini, f"{base}/v1/rerank", endpoint_batch_size=3), tmp_path / "l")
    corpus = read_corpus(mini["corpus"])
    for rec in read_labels(path):
        docs = [corpus[d.doc_id].full_text for d in rec.docs]
        expected = ranker_runtime.score(rec.query, docs)
        assert [d.score for d in rec.docs] == pytest.approx(expected.tolist(), abs=1e-4)


def test_llm_alone_reports_whether_an_ensemble_would_do_better(demo_data: Path, tmp_path: Path,
                                                              tiny_cross_encoder_dir: Path,
                                                              tiny_decoder_dir: Path) -> None:
    """source=llm (the full preset's default) with qrels: the LLM's own labels, dense and BM25 are compared on
    the fit queries, and the answer is recorded (no extra LLM call)."""
    from tests.teacher_data import write_mini

    data = write_mini(demo_data, tmp_path / "d", n_queries=6, n_extra_docs=60)
    cfg = LabelConfig(source="llm", teacher=str(tiny_decoder_dir), llm_score="qlm", queries=str(data["queries"]),
                      corpus=str(data["corpus"]), qrels=str(data["qrels"]), n_bm25=5, n_dense=3, n_random=1,
                      max_length=64, device="cpu", dense_model=str(tiny_cross_encoder_dir))
    run_label(cfg, tmp_path / "l")
    check = json.loads((tmp_path / "l" / "ensemble_check.json").read_text())
    assert check["checked"] and set(check["dev_ndcg10_alone"]) == {"llm", "dense", "bm25"}
    assert check["favours_ensemble"] == (check["dev_ndcg10_ensemble"] > check["dev_ndcg10_alone"]["llm"] + 0.005)
    assert json.loads((tmp_path / "l" / "manifest.json").read_text())["ensemble_check"] == check


def test_synthetic_qrels_give_equal_weights_to_the_members_not_far_below_the_best() -> None:
    """On synthetic qrels BM25 wins by construction: coordinate ascent gives it all the weight, the synthetic
    rule keeps every member within half of the best at equal weight and drops only the broken one."""
    from distill.teacher.label import synthetic_qrels_weights

    qids = [f"q{i}" for i in range(12)]
    qrels = {q: {f"{q}-pos": 1} for q in qids}
    docs = [f"d{j}" for j in range(9)]

    def run(pos_rank: dict[str, int]) -> dict[str, dict[str, float]]:
        out = {}
        for q in qids:
            order = docs[:]
            order.insert(pos_rank[q], f"{q}-pos")
            out[q] = {d: float(len(order) - k) for k, d in enumerate(order)}
        return out

    bm25 = run(dict.fromkeys(qids, 0))  # always first: nDCG 1
    dense = run({q: (0 if i % 2 else 3) for i, q in enumerate(qids)})  # first or fourth
    llm = run(dict.fromkeys(qids, 9))  # always last
    runs = {"llm": llm, "dense": dense, "bm25": bm25}
    fitted, _ = fit_weights(runs, qrels)
    assert fitted["bm25"] == 1.0 and fitted["dense"] == 0.0
    weights, alone = synthetic_qrels_weights(runs, qrels)
    assert alone["bm25"] == pytest.approx(1.0) and 0.5 < alone["dense"] < 1.0 and alone["llm"] < 0.5
    assert weights == {"llm": 0.0, "dense": 0.5, "bm25": 0.5}


def test_ensemble_label_on_synthetic_qrels_says_how_it_weighed(demo_data: Path, tmp_path: Path,
                                                              tiny_cross_encoder_dir: Path) -> None:
    from tests.teacher_data import write_mini

    data = write_mini(demo_data, tmp_path / "data", n_queries=8, n_extra_docs=60)
    base = {"source": "ensemble", "members": ("dense", "bm25"), "queries": str(data["queries"]),
            "corpus": str(data["corpus"]), "qrels": str(data["qrels"]), "n_bm25": 5, "n_dense": 3, "n_random": 1,
            "fit_queries": 8, "dense_model": str(tiny_cross_encoder_dir)}
    run_label(LabelConfig(qrels_kind="synthetic", **base), tmp_path / "syn")
    info = json.loads((tmp_path / "syn" / "ensemble.json").read_text())
    assert "synthetic qrels: equal weights" in info["fitted_on"]
    alone = info["dev_ndcg10_alone"]
    kept = [m for m in ("dense", "bm25") if alone[m] >= 0.5 * max(alone.values())]
    assert info["weights"] == {m: (round(1 / len(kept), 4) if m in kept else 0.0) for m in ("dense", "bm25")}
    # synthetic_weights=fit: coordinate ascent, as with real qrels
    run_label(LabelConfig(qrels_kind="synthetic", synthetic_weights="fit", **base), tmp_path / "fit")
    assert "coordinate ascent" in json.loads((tmp_path / "fit" / "ensemble.json").read_text())["fitted_on"]
    with pytest.raises(ConfigError, match="synthetic_weights"):
        LabelConfig(synthetic_weights="best", **base)
