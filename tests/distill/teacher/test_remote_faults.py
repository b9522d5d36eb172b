"""The fault table of the remote teachers, one row per fault, for both sources (``endpoint`` and ``openai``):
each row asserts the exit code, the message, that nothing half-written is left (no manifest) and no traceback."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.label_files import read_labels
from tests.distill.teacher.stand_ins import serve

SOURCES = {"endpoint": "cohere-v1", "openai": "openai"}

#: mode -> (exit code, text the error or log must contain, label-config overrides)
FAULTS: dict[str, tuple[int, str, dict[str, object]]] = {
    "down": (3, "failed 3 times", {}),
    "slow": (3, "failed 3 times (last: ReadTimeout", {}),
    "garbage": (3, "(not JSON", {}),
    "auth": (3, "refused the request (HTTP 401", {}),
    "503": (3, "failed 3 times (last: HTTP 503", {}),
    "flaky": (0, "retry 1/2", {"endpoint_concurrency": 1}),
    "429": (0, "HTTP 429", {"endpoint_max_wait_s": 5.0}),
    "huge-retry-after": (0, "waiting 0.1 s, the most max_wait_s allows", {}),
    "wrong-count": (3, "scores for", {}),
    "duplicate": (3, "appears twice (duplicate or extra results)", {}),
    "extra": (3, "is out of range", {}),
}


@pytest.fixture(scope="module")
def mini(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.teacher_data import write_mini

    return write_mini(demo_data, tmp_path_factory.mktemp("mini"), n_queries=4, n_extra_docs=30)


def _args(source: str, url: str, mini: dict[str, Path], out: Path, overrides: dict[str, object]) -> list[str]:
    cfg = out.parent / f"{out.name}.json"
    cfg.write_text(json.dumps({"endpoint_timeout_s": 0.5, "endpoint_max_wait_s": 0.1, "endpoint_batch_size": 4,
                               "endpoint_concurrency": 2, **overrides}))
    return ["teacher", "label", "--source", source, "--endpoint-url", url, "--endpoint-retries", "2",
            "--endpoint-model", "m",
            "--queries", str(mini["queries"]), "--corpus", str(mini["corpus"]), "--n-bm25", "4", "--n-dense", "0",
            "--n-random", "1", "--config", str(cfg), "--out", str(out)]


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("mode", list(FAULTS))
def test_remote_fault_table(source: str, mode: str, mini: dict[str, Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    code_expected, text, overrides = FAULTS[mode]
    out = tmp_path / "l"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="distill.teacher._endpoint"):
        if mode == "down":
            url = "http://127.0.0.1:9/v1" if source == "openai" else "http://127.0.0.1:9/v1/rerank"  # discard port
            code = main(_args(source, url, mini, out, overrides))
        else:
            with serve(SOURCES[source], mode) as (url, _):
                code = main(_args(source, url, mini, out, overrides))
    err = capsys.readouterr().err + caplog.text
    assert code == code_expected, err
    assert text in err and "Traceback" not in err
    if code:
        assert not (out / "manifest.json").exists()
    else:
        assert len(read_labels(out / "labels.jsonl")) == 4
    if mode == "429":
        assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured


@pytest.mark.parametrize("url", ["http://", "https://:443/v1", "ftp://host/rerank"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_a_url_without_a_host_is_exit_2_before_any_request(source: str, url: str, mini: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = main(_args(source, url, mini, tmp_path / "l", {}))
    err = capsys.readouterr().err
    assert code == 2 and "--endpoint-url" in err and "retry" not in err and "Traceback" not in err
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_server_that_dies_mid_run_keeps_labels_and_resume_finishes(source: str, mini: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    """One request per query (batch 32, completions for openai), then garbage: the first query's labels stay,
    and the same command against a healthy server labels the rest."""
    out = tmp_path / "l"
    with serve(SOURCES[source], "dies") as (url, _):
        url = url + "/completions" if source == "openai" else url
        args = _args(source, url, mini, out, {"endpoint_batch_size": 32})
        assert main(args) == 3
    kept = read_labels(out / "labels.jsonl")
    assert len(kept) == 1
    port = int(url.split(":")[2].split("/")[0])
    with serve(SOURCES[source], port=port) as (_, handler):  # the same server restarted at the same address
        assert main(args) == 0
        assert handler.calls == 3  # only the queries not yet labelled
    labels = read_labels(out / "labels.jsonl")
    assert labels[0] == kept[0] and len({r.qid for r in labels}) == 4
