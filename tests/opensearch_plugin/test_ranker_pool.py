"""Client-side replicas (RankerPool), against stand-in rankers on 127.0.0.1: round robin, failover on connection
errors, 5xx and timeouts, a breaker per replica, the card's defaults from the first healthy replica, and a
warning when replicas serve different cards. The plugin's twin of this policy is tested on a node."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from distill.core.errors import ConfigError
from distill.core.interpolation import Interpolation
from opensearch_plugin import RankerError, RankerPool, RescoreParams, rescore_hits
from ranker.process import free_port
from tests.opensearch_plugin.stand_in_ranker import FakeRanker

pytest.importorskip("httpx")

CARD = Interpolation(0.4, "minmax", "minmax", "dev_qrels", depth=5).to_dict()
DOCS = ["protein gene", "tumor", "insulin receptor"]


@pytest.fixture()
def rankers() -> Iterator[tuple[FakeRanker, FakeRanker]]:
    a, b = FakeRanker(CARD, "card-a"), FakeRanker(CARD, "card-a")
    yield a, b
    a.close()
    b.close()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_round_robin_spreads_calls(rankers: tuple[FakeRanker, FakeRanker]) -> None:
    a, b = rankers
    with RankerPool([a.url, b.url]) as pool:
        for _ in range(4):
            scores = pool("protein", DOCS)
            assert len(scores) == 3 and scores.served == "raw_logit"
        assert len(a.requests) == len(b.requests) == 2
        assert pool.stats()["failovers"] == 0


@pytest.mark.parametrize("failure", ["down", "error503", "slow"])
def test_failover_keeps_every_call_scored_and_the_breaker_opens(rankers: tuple[FakeRanker, FakeRanker],
                                                                failure: str) -> None:
    a, b = rankers
    bad = dead_url() if failure == "down" else a.url
    a.mode = failure if failure != "down" else "ok"
    with RankerPool([bad, b.url], timeout=1.0, failure_threshold=2, open_duration_s=60) as pool:
        for _ in range(6):
            assert len(pool("protein", DOCS)) == 3
        stats = pool.stats()
    bad_ep, good_ep = stats["endpoints"]
    assert stats["failures"] == 0 and stats["successes"] == 6
    assert bad_ep["failures"] == 2 and bad_ep["breaker_open"] and bad_ep["breaker_trips"] == 1
    assert stats["failovers"] == 2 and good_ep["successes"] == 6
    assert set(bad_ep["failures_by_kind"]) == {"connection" if failure == "down" else
                                               "timeout" if failure == "slow" else "http_status"}


@pytest.mark.parametrize("failure", ["error400", "garbage", "wrong_count"])
def test_answers_every_replica_would_repeat_are_not_failed_over(rankers: tuple[FakeRanker, FakeRanker],
                                                                failure: str) -> None:
    a, b = rankers
    a.mode = failure
    with RankerPool([a.url, b.url]) as pool:
        with pytest.raises(RankerError) as err:
            pool("protein", DOCS)
        assert err.value.kind == ("http_status" if failure == "error400" else "malformed")
        assert b.requests == [] and pool.stats()["failures"] == 1


def test_every_breaker_open_is_an_error_and_rescoring_fails_open() -> None:
    with RankerPool([dead_url()], timeout=1.0, failure_threshold=1, open_duration_s=60) as pool:
        with pytest.raises(RankerError):
            pool("q", DOCS)
        with pytest.raises(RankerError, match="circuit breaker open on every ranker"):
            pool("q", DOCS)
        hits = [{"_id": f"d{i}", "_score": 3.0 - i, "_source": {"text": t}} for i, t in enumerate(DOCS)]
        params = RescoreParams(window_size=3, first_stage_weight=0.5, first_stage_norm="minmax", ranker_norm="minmax",
                               score_convention="raw_logit")
        assert rescore_hits(hits, "q", params, pool) == [(h["_id"], h["_score"]) for h in hits]


def test_defaults_come_from_the_first_healthy_replica_and_a_different_card_is_logged(
        rankers: tuple[FakeRanker, FakeRanker], caplog: pytest.LogCaptureFixture) -> None:
    a, b = rankers
    b.info["card_sha256"] = "card-b"
    with RankerPool([dead_url(), a.url, b.url], timeout=1.0) as pool, caplog.at_level(logging.WARNING):
        defaults = pool.model_defaults()
        assert defaults.source == a.url and defaults.interpolation == Interpolation.from_dict(CARD)
        assert pool.model_defaults() is defaults and a.info_requests == 1
        stats = pool.stats()
    assert "replicas serve different models" in caplog.text and b.url in caplog.text
    assert stats["card_mismatch"] is True and stats["model"]["card_sha256"] == "card-a"


def test_urls_are_validated() -> None:
    with pytest.raises(ConfigError, match="http"):
        RankerPool(["ftp://x"])
    with pytest.raises(ConfigError, match="http"):
        RankerPool([])
