from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.bm25 import BM25Index
from distill.core.errors import ConfigError, DataError
from distill.core.evaluation import evaluate
from distill.core.formats import read_corpus, read_qrels, read_queries


def _dcg(gains: list[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_ndcg_matches_trec_eval_definition_on_graded_qrels() -> None:
    # trec_eval ndcg_cut: gain = rel (linear), discount log2(rank + 1), ideal from all judged docs.
    qrels = {"q": {"a": 3, "b": 2, "c": 0, "d": 1, "e": 2}}
    run = {"q": {"c": 5.0, "a": 4.0, "x": 3.0, "b": 2.0, "d": 1.0}}
    expected = _dcg([0, 3, 0, 2, 1]) / _dcg([3, 2, 2, 1, 0])
    res = evaluate(qrels, run, ["ndcg@10", "mrr@10", "recall@100"])
    assert res.metrics["ndcg@10"] == pytest.approx(expected, abs=1e-6)
    assert res.metrics["mrr@10"] == pytest.approx(0.5)  # first rel>=1 doc at rank 2
    assert res.metrics["recall@100"] == pytest.approx(3 / 4)  # a, b, d of a, b, d, e


def test_rel_threshold_changes_mrr_not_ndcg() -> None:
    qrels = {"q": {"a": 1, "b": 2}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    assert evaluate(qrels, run, ["mrr@10"], rel_threshold=1).metrics["mrr@10"] == pytest.approx(1.0)
    assert evaluate(qrels, run, ["mrr@10"], rel_threshold=2).metrics["mrr@10"] == pytest.approx(0.5)


def test_unanswered_queries_count_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}  # q3 has no relevant doc: not averaged
    res = evaluate(qrels, {"q1": {"a": 1.0}}, ["ndcg@10"])
    assert res.n_queries == 2 and res.n_unanswered == 1
    assert res.metrics["ndcg@10"] == pytest.approx(0.5)


def test_bad_metric_names() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'bleu@4'"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["bleu@4"])
    with pytest.raises(ConfigError, match="needs a cut-off"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["ndcg"])
    with pytest.raises(DataError, match="no relevant judgment"):
        evaluate({"q": {"a": 0}}, {"q": {"a": 1.0}})


@pytest.mark.parametrize("name", ["ndcg@１０", "ndcg@١٠", "mrr@²", "recall@1_0", "p@+5"])
def test_a_cut_off_is_ascii_digits(name: str) -> None:
    """int() and str.isdigit() take full-width and Arabic-Indic digits; ndcg@１０ was evaluated but reported
    under a name no other tool reads."""
    with pytest.raises(ConfigError, match="ASCII digits"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, [name])


def test_names_of_one_measure_each_get_its_value() -> None:
    """ndcg@10 and NDCG@10 (or mrr@10 and rr@10) are one ir-measures measure: every name gets the value
    (one of them used to report 0.0)."""
    qrels, run = {"q": {"a": 1}}, {"q": {"b": 2.0, "a": 1.0}}
    res = evaluate(qrels, run, ["ndcg@10", "NDCG@10", "mrr@10", "rr@10", "recall@10", "r@10"])
    assert res.metrics["ndcg@10"] == res.metrics["NDCG@10"] == pytest.approx(1 / math.log2(3))
    assert res.metrics["mrr@10"] == res.metrics["rr@10"] == pytest.approx(0.5)
    assert res.metrics["recall@10"] == res.metrics["r@10"] == pytest.approx(1.0)


@pytest.mark.parametrize("threshold", [0, -1, 2**31, 99999999999])
def test_rel_threshold_fits_trec_eval(threshold: int) -> None:
    """pytrec_eval holds the threshold in a C int: 99999999999 was a TypeError traceback."""
    with pytest.raises(ConfigError, match="rel_threshold must be in the range 1 <= x <= 2147483647"):
        evaluate({"q": {"a": 1}}, {"q": {"a": 1.0}}, ["mrr@10"], rel_threshold=threshold)


def test_two_libraries_agree_on_a_real_bm25_run(demo_data: Path) -> None:
    """ir-measures (pytrec_eval) and ranx must agree on nDCG@10 / MRR@10 / R@100 for a real run."""
    from ranx import Qrels as RQrels
    from ranx import Run as RRun
    from ranx import evaluate as ranx_evaluate

    corpus = read_corpus(demo_data / "corpus.jsonl")
    queries = read_queries(demo_data / "queries.test.tsv")
    qrels = read_qrels(demo_data / "qrels.test.txt")
    run = BM25Index(corpus).search(queries, top_k=100)
    ours = evaluate(qrels, run).metrics
    theirs = ranx_evaluate(RQrels(qrels), RRun(run), ["ndcg@10", "mrr@10", "recall@100"])
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        assert ours[metric] == pytest.approx(theirs[metric], abs=1e-4), metric
    assert 0.5 < ours["ndcg@10"] < 0.9  # BM25 on SciFact queries is ~0.68


def test_cli_evaluate_several_runs_writes_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "qrels").write_text("1 0 a 1\n2 0 b 1\n")
    (tmp_path / "good").write_text("1 Q0 a 1 2 t\n1 Q0 b 2 1 t\n2 Q0 b 1 1 t\n")
    (tmp_path / "bad").write_text("1 Q0 b 1 2 t\n1 Q0 a 2 1 t\n2 Q0 a 1 1 t\n")
    code = main(["evaluate", "--qrels", str(tmp_path / "qrels"), "--run", f"good={tmp_path / 'good'}",
                 "--run", str(tmp_path / "bad"), "--json", str(tmp_path / "m.json"),
                 "--markdown", str(tmp_path / "m.md"), "--plot", str(tmp_path / "m.png")])
    assert code == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["good"]["ndcg@10"] == pytest.approx(1.0) and data["bad"]["mrr@10"] == pytest.approx(0.25)
    md = (tmp_path / "m.md").read_text()
    assert md.splitlines()[0] == "| system | ndcg@10 | mrr@10 | recall@100 |"
    assert "| good | 1.0000 | 1.0000 | 1.0000 |" in md and "| bad | 0.3155 | 0.2500 | 0.5000 |" in md
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert "| good |" in capsys.readouterr().out


def test_cli_single_run_json_is_flat(tmp_path: Path) -> None:
    (tmp_path / "qrels").write_text("1 0 a 1\n")
    (tmp_path / "run").write_text("1 Q0 a 1 2 t\n")
    assert main(["evaluate", "--qrels", str(tmp_path / "qrels"), "--run", str(tmp_path / "run"),
                 "--json", str(tmp_path / "m.json")]) == 0
    data = json.loads((tmp_path / "m.json").read_text())
    conventions = data.pop("conventions")  # how the numbers were computed travels with them
    assert data == {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@100": 1.0}
    assert conventions["ignore_identical_ids"] is False and conventions["rel_threshold"] == 1
