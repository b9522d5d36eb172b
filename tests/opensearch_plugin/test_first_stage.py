"""The OpenSearch commands' error paths that need no node: an unreachable URL exits 3 naming it, nothing is
written; contradictory rescore flags exit 2; the retrieve group lists the engine beside bm25."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.core.datasets import bundled_dataset
from ranker.process import free_port

pytest.importorskip("opensearchpy")

DEMO = bundled_dataset()


def test_retrieve_opensearch_from_an_unreachable_url_exits_3_and_names_it(tmp_path: Path, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "run.trec"
    code = main(["retrieve", "opensearch", "--url", url, "--index", "scifact", "--queries", str(DEMO.test_queries),
                 "--top-k", "10", "--out", str(out)])
    assert code == 3
    assert f"OpenSearch at {url} is unreachable" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--top-k", "0"], "--top-k"),
    (["--top-k", "10001"], "--top-k"),
    (["--shards", "0"], "--shards"),
])
def test_retrieve_opensearch_bad_arguments_exit_2(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    code = main(["retrieve", "opensearch", "--index", "i", "--queries", str(DEMO.test_queries),
                 "--out", str(tmp_path / "run.trec"), *args])
    assert code == 2 and message in capsys.readouterr().err


def test_retrieve_lists_opensearch(capsys) -> None:
    assert main(["retrieve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "bm25" in out and "opensearch" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--query-weight", "0.5"], "apply to score_mode total"),
    (["--score-mode", "total", "--first-stage-weight", "0.5"], "apply to score_mode interpolate"),
])
def test_contradictory_rescore_flags_exit_2(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    code = main(["opensearch", "evaluate", "--index", "i", "--queries", str(DEMO.test_queries), "--qrels",
                 str(DEMO.test_qrels), "--out", str(tmp_path / "out"), *flags])
    assert code == 2 and message in capsys.readouterr().err
    code = main(["opensearch", "rescore-clause", "--minimal", *flags])
    assert code == 2 and message in capsys.readouterr().err


def test_rescore_clause_minimal_needs_no_ranker(capsys) -> None:
    assert main(["opensearch", "rescore-clause", "--minimal", "--query-text", "q"]) == 0
    assert '"score_mode": "interpolate"' in capsys.readouterr().out
