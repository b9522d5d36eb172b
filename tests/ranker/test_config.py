"""ServerConfig refuses every non-finite or out-of-range duration and count itself, whatever built it."""

from __future__ import annotations

import json
import math

import pytest

from distill.core.errors import ConfigError
from ranker.batcher import BatcherConfig
from ranker.config import COUNT_RANGES, DURATION_RANGES, ServerConfig


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, float("1e999")])
@pytest.mark.parametrize("name", sorted(DURATION_RANGES))
def test_every_duration_must_be_finite(name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
        ServerConfig(**{name: value})


@pytest.mark.parametrize("name", sorted(DURATION_RANGES))
def test_every_duration_has_a_range(name):
    low, high = DURATION_RANGES[name]
    with pytest.raises(ConfigError, match=f"{name} must be in the range"):
        ServerConfig(**{name: high * 2})
    with pytest.raises(ConfigError, match=f"{name} must be in the range"):
        ServerConfig(**{name: low - 1})


@pytest.mark.parametrize("value", [math.nan, math.inf, 1.5, True, "\uff11\uff12", -5])
@pytest.mark.parametrize("name", sorted(COUNT_RANGES))
def test_every_count_must_be_an_integer_in_range(name, value):
    with pytest.raises(ConfigError, match=name):
        ServerConfig(**{name: value})


def test_numbers_spelled_as_strings_are_stored_as_numbers():
    cfg = ServerConfig(max_docs="12", max_queue="100", max_wait_ms="2.5")  # type: ignore[arg-type]
    assert (cfg.max_docs, cfg.max_queue, cfg.max_wait_ms) == (12, 100, 2.5)


def test_zero_timeouts_and_deadline_are_refused_but_a_zero_wait_is_not():
    for name in ("header_timeout_s", "body_timeout_s", "graceful_timeout_s", "default_deadline_ms"):
        with pytest.raises(ConfigError, match=f"{name} must be in the range 0 < x"):
            ServerConfig(**{name: 0})
    assert ServerConfig(max_wait_ms=0).max_wait_ms == 0


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_batcher_config_refuses_a_wait_that_never_ends(value):
    with pytest.raises(ConfigError, match="max_wait_ms"):
        BatcherConfig(max_wait_ms=value)


@pytest.mark.parametrize(("key", "match"), [
    ("", "api_key is empty"), ("  ", "api_key is empty"), (" k", "spaces before or after"),
    ("k\n", "spaces before or after"), ("k\x00ey", "U\\+0000, which is a control character"),
    ("\u20ackey", r"U\+20AC, which is above U\+00FF"),
])
def test_api_keys_no_request_could_match_are_refused(key, match):
    with pytest.raises(ConfigError, match=match):
        ServerConfig(api_key=key)


def test_latin1_api_key_is_accepted():
    assert ServerConfig(api_key="cl\u00e9-123").api_key == "cl\u00e9-123"


def test_body_and_text_byte_limits_fit_the_largest_legal_request():
    cfg = ServerConfig(max_docs=10, max_chars=100)
    assert cfg.body_limit() >= len(json.dumps({"query": "\u00e9" * 100, "documents": ["\u00e9" * 100] * 10}))
    # a text of max_chars characters outside the BMP, \u-escaped as surrogate pairs: 12 bytes each
    assert cfg.max_text_bytes() >= len(json.dumps({"text": "\U0001f600" * 100}))
    assert ServerConfig(max_body_bytes=4096).body_limit() == 4096
    assert cfg.limits()["max_text_bytes"] == cfg.max_text_bytes()


def test_max_queue_must_hold_one_full_request():
    with pytest.raises(ConfigError, match="max_queue=10 < max_docs=100"):
        ServerConfig(max_queue=10, max_docs=100)
