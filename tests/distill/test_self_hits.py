"""BEIR's self-hit rule (ignore_identical_ids): when queries are documents, a query's own document
is removed from its ranking before scoring -- from the run only, never from the qrels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.evaluation import drop_self_hits, evaluate, resolve_identical_ids

# queries "a" and "b" are also documents; each retrieves itself first
QRELS = {"a": {"b": 1}, "b": {"c": 1}}
RUN = {"a": {"a": 3.0, "b": 2.0, "c": 1.0}, "b": {"b": 3.0, "x": 2.0, "c": 1.0}}


def _hand() -> dict[str, dict[str, float]]:
    """nDCG@10 / MRR@10 by hand. Kept: a's relevant b is at rank 2, b's relevant c at rank 3.
    Dropped (BEIR): each relevant document moves up one rank (1 and 2)."""
    return {
        "kept": {"ndcg@10": (1 / math.log2(3) + 1 / math.log2(4)) / 2, "mrr@10": (1 / 2 + 1 / 3) / 2},
        "dropped": {"ndcg@10": (1.0 + 1 / math.log2(3)) / 2, "mrr@10": (1 + 1 / 2) / 2},
    }


def _beir_evaluate(qrels: dict[str, dict[str, int]], results: dict[str, dict[str, float]]) -> float:
    """BEIR's EvaluateRetrieval.evaluate(..., ignore_identical_ids=True), nDCG@10 part, restated."""
    import pytrec_eval

    results = {q: dict(docs) for q, docs in results.items()}
    for qid, rels in results.items():
        for pid in list(rels):
            if qid == pid:
                results[qid].pop(pid)
    scores = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(results)
    return sum(s["ndcg_cut_10"] for s in scores.values()) / len(scores)


def test_drop_self_hits_changes_the_number_exactly_as_beir_does() -> None:
    hand = _hand()
    kept = evaluate(QRELS, RUN, ["ndcg@10", "mrr@10"]).metrics
    dropped = evaluate(QRELS, RUN, ["ndcg@10", "mrr@10"], ignore_identical_ids=True)
    for metric in ("ndcg@10", "mrr@10"):
        assert kept[metric] == pytest.approx(hand["kept"][metric], abs=1e-9)
        assert dropped.metrics[metric] == pytest.approx(hand["dropped"][metric], abs=1e-9)
    assert dropped.metrics["ndcg@10"] == pytest.approx(_beir_evaluate(QRELS, RUN), abs=1e-9)
    assert dropped.conventions.ignore_identical_ids and dropped.conventions.self_hits_dropped == 2
    assert drop_self_hits(RUN) == ({"a": {"b": 2.0, "c": 1.0}, "b": {"x": 2.0, "c": 1.0}}, 2)
    assert RUN["a"]["a"] == 3.0  # the input is not modified


def test_qrels_keep_a_judged_self_hit() -> None:
    """BEIR drops from the run only: a self hit judged relevant stays in the ideal ranking."""
    qrels = {"a": {"a": 1, "b": 1}}
    run = {"a": {"a": 2.0, "b": 1.0}}
    expected = (1.0) / (1 + 1 / math.log2(3))  # b at rank 1; ideal has two relevant docs
    assert evaluate(qrels, run, ["ndcg@10"], ignore_identical_ids=True).metrics["ndcg@10"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("runs", "qrels", "doc_ids", "on", "why"),
    [
        ([RUN], QRELS, None, True, "2 of 2 query rankings"),
        # Cranfield-style numeric ids: doc "1" exists but query "1" does not retrieve it first
        ([{"1": {"7": 2.0, "1": 1.0}, "2": {"9": 1.0}}], {"1": {"7": 1}}, ["1", "2", "7", "9"], False, "by accident"),
        ([{"1": {"7": 2.0}}], {"1": {"7": 1}}, ["7", "8"], False, "no query id is also a document id"),
        ([RUN], {"a": {"a": 1}}, None, False, "judge 1 queries' own id relevant"),
    ],
)
def test_auto_rule(runs: list[dict[str, dict[str, float]]], qrels: dict[str, dict[str, int]],
                   doc_ids: list[str] | None, on: bool, why: str) -> None:
    got, reason = resolve_identical_ids(None, runs, qrels, doc_ids)
    assert got is on and why in reason and reason.startswith("auto: ")
    assert resolve_identical_ids(False, runs, qrels, doc_ids) == (False, "--keep-identical-ids")


def _write_tiny(tmp_path: Path) -> tuple[Path, Path]:
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("a 0 b 1\nb 0 c 1\n", encoding="utf-8")
    run = tmp_path / "run.trec"
    run.write_text("".join(f"{q} Q0 {d} {r} {s} t\n" for q, docs in RUN.items()
                           for r, (d, s) in enumerate(docs.items(), start=1)), encoding="utf-8")
    return qrels, run


def test_cli_evaluate_auto_states_and_records_the_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qrels, run = _write_tiny(tmp_path)
    out = tmp_path / "auto.json"
    assert main(["evaluate", "--qrels", str(qrels), "--run", str(run), "--metrics", "ndcg@10", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "equals the query id dropped (auto: 2 of 2" in printed
    data = json.loads(out.read_text())
    assert data["ndcg@10"] == pytest.approx(_hand()["dropped"]["ndcg@10"])
    assert data["conventions"]["ignore_identical_ids"] is True and data["conventions"]["self_hits_dropped"] == 2
    assert main(["evaluate", "--qrels", str(qrels), "--run", str(run), "--metrics", "ndcg@10", "--keep-identical-ids",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["ndcg@10"] == pytest.approx(_hand()["kept"]["ndcg@10"])
    assert data["conventions"]["identical_ids_reason"] == "--keep-identical-ids"


def test_cli_retrieve_drops_self_hits_and_still_returns_top_k(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    docs = {"a": "solar panels cut household energy bills", "b": "solar panels need sunny roofs",
            "c": "energy bills rise in winter", "d": "roofs and panels"}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()))
    queries = tmp_path / "queries.tsv"  # ArguAna-style: the queries are documents of the corpus
    queries.write_text("a\tsolar panels cut household energy bills\nb\tsolar panels need sunny roofs\n")
    out = tmp_path / "bm25.trec"
    assert main(["retrieve", "bm25", "--corpus", str(corpus), "--queries", str(queries), "--top-k", "2",
                 "--out", str(out)]) == 0
    assert "identical ids: dropped (auto: 2 of 2" in capsys.readouterr().out
    lines = [line.split() for line in out.read_text().splitlines()]
    assert all(q != d for q, _, d, *_ in lines)
    assert [q for q, *_ in lines] == ["a", "a", "b", "b"]  # top-k is still 2 per query
    assert main(["retrieve", "bm25", "--corpus", str(corpus), "--queries", str(queries), "--top-k", "2",
                 "--out", str(out), "--keep-identical-ids"]) == 0
    assert [line.split()[2] for line in out.read_text().splitlines()][::2] == ["a", "b"]  # self first when kept
