"""The openai teacher source against a stand-in OpenAI-compatible server: P(yes) log-odds through chat and
completions, query likelihood through completions with echo, model discovery, the API key from the
environment, shards and the answer checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import ConfigError
from distill.core.formats import Document, Query, read_corpus
from distill.core.label_files import read_labels
from distill.teacher._endpoint import EndpointConfig, EndpointError
from distill.teacher.config import LabelConfig
from distill.teacher.label import run_label
from distill.teacher.openai_source import OpenAISource, yes_log_odds
from tests.distill.teacher.stand_ins import MODEL, expected_qlm, overlap, serve

CORPUS = {f"d{i}": Document(f"d{i}", t, x) for i, (t, x) in enumerate(
    [("Apoptosis", "cancer cell apoptosis pathway"), ("", "weather in spring"), ("Cells", "cell biology of cancer")])}
QUERY = Query("q", "cancer cell apoptosis")


@pytest.fixture(scope="module")
def mini(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.teacher_data import write_mini

    return write_mini(demo_data, tmp_path_factory.mktemp("mini"), n_queries=4, n_extra_docs=30)


def _source(url: str, **kw: object) -> OpenAISource:
    score = kw.pop("score", "yes")
    return OpenAISource(CORPUS, EndpointConfig(url=url, retries=0, batch_size=2, **kw), score)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", ["", "/chat/completions", "/completions"])
def test_yes_log_odds_through_chat_and_completions(suffix: str) -> None:
    """The stand-in answers P(yes) = sigmoid(overlap - 1.5), split over "Yes" and "yes": the label is the logit."""
    with serve("openai") as (url, handler):
        run = _source(url + suffix).score({"q": QUERY}, {"q": list(CORPUS)})["q"]
    for d, doc in CORPUS.items():
        assert run[d] == pytest.approx(overlap(QUERY.text, doc.full_text) - 1.5, abs=1e-6)
    paths = {r["path"] for r in handler.requests}
    assert paths == ({"/v1/completions"} if suffix == "/completions" else {"/v1/chat/completions"})
    assert all(r["body"]["model"] == MODEL for r in handler.requests)  # discovered at GET /v1/models
    if suffix == "/completions":
        assert sorted(len(r["body"]["prompt"]) for r in handler.requests) == [1, 2]  # batch_size prompts per call
    else:
        assert all(r["body"]["logprobs"] is True and r["body"]["top_logprobs"] == 20 for r in handler.requests)


def test_query_likelihood_through_completions_with_echo() -> None:
    with serve("openai") as (url, handler):
        run = _source(url, score="qlm", model="m").score({"q": QUERY}, {"q": list(CORPUS)})["q"]
    for d, doc in CORPUS.items():
        assert run[d] == pytest.approx(expected_qlm(QUERY.text, doc.full_text))
    assert all(r["body"]["echo"] is True and r["path"] == "/v1/completions" for r in handler.requests)
    with pytest.raises(ConfigError, match="qlm needs /v1/completions"):
        _source("http://127.0.0.1:9/v1/chat/completions", score="qlm")


def test_yes_log_odds_bounds_a_missing_answer_and_sums_spellings() -> None:
    assert yes_log_odds([("Yes", math.log(0.3)), (" yes", math.log(0.3)), ("No", math.log(0.2))]) == \
        pytest.approx(math.log(0.6 / 0.2))
    # "No" is not among the top tokens: its probability is below the least likely listed one (0.05)
    assert yes_log_odds([("Yes", math.log(0.9)), ("The", math.log(0.05))]) == pytest.approx(math.log(0.9 / 0.05))
    assert yes_log_odds([("The", -0.1), ("A", -3.0)]) is None
    with pytest.raises(ValueError, match="not a number"):
        yes_log_odds([("Yes", float("nan"))])


@pytest.mark.parametrize(("score", "match"), [
    ("yes", "no logprobs in the answer: does this server support logprobs/top_logprobs"),
    ("qlm", "the server did not echo the prompt"),
])
def test_a_server_without_logprobs_or_echo_is_a_clear_error(score: str, match: str) -> None:
    with serve("openai", "no-logprobs") as (url, _), pytest.raises(EndpointError, match=match):
        _source(url, score=score, model="m").score({"q": QUERY}, {"q": list(CORPUS)})


def test_openai_labels_the_bundled_queries_with_shards_and_env_key(mini: dict[str, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shards through a server that wants a key: the key comes from OPENAI_API_KEY, never reaches the config
    file, and the two label files together cover every query once, with the same labels as one unsharded run."""
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    corpus = read_corpus(mini["corpus"])
    with serve("openai", "auth") as (url, handler):
        paths = []
        for shard in ("0/2", "1/2"):
            args = ["teacher", "label", "--source", "openai", "--endpoint-url", url, "--shard", shard,
                    "--queries", str(mini["queries"]), "--corpus", str(mini["corpus"]), "--n-bm25", "4",
                    "--n-dense", "0", "--n-random", "1", "--out", str(tmp_path / shard.replace("/", "of"))]
            assert main(args) == 0
            paths.append(tmp_path / shard.replace("/", "of") / "labels.jsonl")
        assert {r["auth"] for r in handler.requests} == {"Bearer k"}
    shards = [read_labels(p) for p in paths]
    qids = [r.qid for s in shards for r in s]
    assert len(qids) == len(set(qids)) == 4 and all(shards)
    for rec in (r for s in shards for r in s):
        for d in rec.docs:
            assert d.score == pytest.approx(overlap(rec.query, corpus[d.doc_id].full_text[:4000]) - 1.5, abs=1e-6)
    assert '"k"' not in (tmp_path / "0of2" / "config.json").read_text()


def test_label_config_for_openai() -> None:
    with pytest.raises(ConfigError, match="the openai source needs --endpoint-url"):
        LabelConfig(source="openai", queries="q", corpus="c")
    with pytest.raises(ConfigError, match="openai_score must be one of"):
        LabelConfig(source="openai", endpoint_url="http://x/v1", openai_score="maybe", queries="q", corpus="c")
    cfg = LabelConfig(source="ensemble", members=("openai", "bm25"), endpoint_url="http://x/v1", queries="q",
                      corpus="c")
    assert "openai" in cfg.used_sources


def test_run_label_with_qlm(mini: dict[str, Path], tmp_path: Path) -> None:
    with serve("openai") as (url, _):
        cfg = LabelConfig(source="openai", endpoint_url=url, openai_score="qlm", endpoint_batch_size=8,
                          queries=str(mini["queries"]), corpus=str(mini["corpus"]), n_bm25=3, n_dense=0, n_random=1)
        labels = read_labels(run_label(cfg, tmp_path / "l"))
    corpus = read_corpus(mini["corpus"])
    assert len(labels) == 4
    rec = labels[0]
    for d in rec.docs:
        assert d.score == pytest.approx(expected_qlm(rec.query, corpus[d.doc_id].full_text[:4000]))
