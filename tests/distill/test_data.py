from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import DataError
from distill.core.formats import (
    Query,
    check_ids,
    iter_corpus,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    write_qrels,
    write_queries,
    write_run,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_beir_corpus_and_msmarco_tsv(tmp_path: Path) -> None:
    beir = _write(tmp_path, "c.jsonl", '{"_id": "d1", "title": "T", "text": "hello"}\n\n{"_id": 2, "text": "x"}\n')
    docs = read_corpus(beir)
    assert list(docs) == ["d1", "2"]
    assert docs["d1"].full_text == "T. hello" and docs["2"].title == ""
    tsv = _write(tmp_path, "c.tsv", "7\tsome passage\n8\tanother\n")
    assert [d.text for d in iter_corpus(tsv)] == ["some passage", "another"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": ', r"c\.jsonl:2: invalid JSON"),
        ('{"_id": "d1"}\n', r'c\.jsonl:1: missing field "text"'),
        ('{"_id": "d1", "text": ["a"]}\n', r'c\.jsonl:1: field "text" is list'),
        ('{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', r"c\.jsonl:2: duplicate document id 'd1'"),
        ('["not", "an", "object"]\n', r"c\.jsonl:1: a JSON list, not an object"),
        ("[" * 100_000 + "\n", r"c\.jsonl:1: JSON nested too deeply"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    path = _write(tmp_path, "c.jsonl", content)
    with pytest.raises(DataError, match=match):
        read_corpus(path)


def test_queries_tsv_and_jsonl(tmp_path: Path) -> None:
    assert read_queries(_write(tmp_path, "q.tsv", "1\tfirst query\n2\tsecond\n"))["2"] == Query("2", "second")
    assert read_queries(_write(tmp_path, "q.jsonl", '{"_id": "a", "text": "x y"}\n'))["a"].text == "x y"
    with pytest.raises(DataError, match=r"q2\.tsv:2: 1 tab-separated columns.*expected TSV"):
        read_queries(_write(tmp_path, "q2.tsv", "1\tok\nbroken line without tab\n"))
    with pytest.raises(DataError, match=r"q3\.tsv:1: query '1' has empty text"):
        read_queries(_write(tmp_path, "q3.tsv", "1\t \n"))


def test_qrels_trec_and_beir(tmp_path: Path) -> None:
    trec = read_qrels(_write(tmp_path, "q.txt", "1 0 d1 2\n1 0 d2 0\n2 Q0 d3 1\n"))
    assert trec == {"1": {"d1": 2, "d2": 0}, "2": {"d3": 1}}
    beir = read_qrels(_write(tmp_path, "q.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n"))
    assert beir == {"1": {"d1": 1}}
    with pytest.raises(DataError, match=r"bad\.txt:2: relevance 'high' is not a number"):
        read_qrels(_write(tmp_path, "bad.txt", "1 0 d1 1\n1 0 d2 high\n"))
    with pytest.raises(DataError, match=r"bad2\.txt:1: 2 columns"):
        read_qrels(_write(tmp_path, "bad2.txt", "1 d1\n"))


def test_run_roundtrip_sorted_and_atomic(tmp_path: Path) -> None:
    run = {"q1": {"a": 0.5, "b": 2.0, "c": 1.0}, "q2": {"z": -1.0}}
    out = write_run(tmp_path / "r.trec", run, tag="t")
    lines = out.read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 2.000000 t" and lines[2].startswith("q1 Q0 a 3 ")
    assert read_run(out) == run
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(DataError, match=r"r2:1: score 'x' is not a number"):
        read_run(_write(tmp_path, "r2", "q1 Q0 a 1 x t\n"))
    with pytest.raises(DataError, match=r"r3:2: document 'a' listed twice"):
        read_run(_write(tmp_path, "r3", "q1 Q0 a 1 1 t\nq1 Q0 a 2 0.5 t\n"))


def test_writers_roundtrip(tmp_path: Path) -> None:
    write_queries(tmp_path / "q.tsv", [Query("1", "multi\nline\tquery")])
    assert read_queries(tmp_path / "q.tsv")["1"].text == "multi line query"
    write_qrels(tmp_path / "qr.txt", {"1": {"d": 2}})
    assert read_qrels(tmp_path / "qr.txt") == {"1": {"d": 2}}


def test_unknown_ids_are_counted_not_dropped() -> None:
    check = check_ids({"q1": {"d1": 1, "dX": 1}, "q9": {"d1": 1}}, doc_ids=["d1"], qids=["q1"])
    assert (check.unknown_docs, check.unknown_queries) == (1, 1)
    assert "dX" in check.describe("run") and not check.ok


@pytest.mark.parametrize(
    ("qrels", "run", "match"),
    [
        ("1 0 d1 1\n1 0 d2 maybe\n", "1 Q0 d1 1 1.0 t\n", r"qrels\.txt:2: relevance 'maybe' is not a number"),
        ("1 0 d1 1\n", "1 Q0 d1 1 1.0\n", r"run\.trec:1: 5 columns"),
        ("1 0 d1 1\n", "1 Q0 nosuchdoc 1 1.0 t\n", r"1 entries with document ids unknown to the corpus.*nosuchdoc"),
    ],
)
def test_cli_bad_data_exit_code_4_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     qrels: str, run: str, match: str) -> None:
    corpus = _write(tmp_path, "corpus.jsonl",
                    json.dumps({"_id": "d1", "text": "x"}) + "\n" + json.dumps({"_id": "d2", "text": "y"}) + "\n")
    q = _write(tmp_path, "qrels.txt", qrels)
    r = _write(tmp_path, "run.trec", run)
    code = main(["evaluate", "--qrels", str(q), "--run", str(r), "--corpus", str(corpus)])
    err = capsys.readouterr().err
    assert code == 4
    assert "Traceback" not in err
    import re

    assert re.search(match, err), err


def test_cli_missing_file_and_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--qrels", str(tmp_path / "nope.txt"), "--run", str(tmp_path / "r")]) == 4
    assert "nope.txt: file not found" in capsys.readouterr().err
    assert main(["evaluate", "--qrels", "x", "--run", "y", "--metrics", "ndcg@ten"]) in (2, 4)
    assert main(["retrieve", "bm25", "--top-k", "0", "--corpus", "c", "--queries", "q", "--out", "o"]) == 2


def test_atomic_artifacts_get_the_usual_file_mode(tmp_path: Path) -> None:
    """mkstemp/mkdtemp create 0600/0700; artifacts must be readable like any file the user writes."""
    import os

    from distill.core.atomic_io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("bad", ["a b", "a\tb", "a\nb", "a\u00a0b", "a\u3000b", "a\x1cb", "a\x00b", "a\x85b",
                                 "\ud800", ""])
def test_one_id_rule_where_runs_qrels_queries_and_corpora_are_written(tmp_path: Path, bad: str) -> None:
    """An id that whitespace would split (7 or 8 columns in a run, exit 0), a NUL that ends it inside
    trec_eval, or a lone surrogate that UTF-8 cannot hold is refused by every writer, naming the id, and
    nothing is written."""
    from distill.core.formats import Document, check_id, write_corpus

    with pytest.raises(DataError, match=re.escape(repr(bad))):
        check_id(bad, "document id")
    writes = {
        "run.trec": lambda p: write_run(p, {"q": {bad: 1.0}}),
        "run2.trec": lambda p: write_run(p, {bad: {"d": 1.0}}),
        "run3.trec": lambda p: write_run(p, {"q": {"d": 1.0}}, tag=bad),
        "qrels.txt": lambda p: write_qrels(p, {"q": {bad: 1}}),
        "queries.tsv": lambda p: write_queries(p, [Query(bad, "text")]),
        "corpus.tsv": lambda p: write_corpus(p, [Document(bad, "", "text")]),
        "corpus.jsonl": lambda p: write_corpus(p, [Document(bad, "", "text")]),
    }
    for name, write in writes.items():
        with pytest.raises(DataError, match=re.escape(repr(bad))):
            write(tmp_path / name)
        assert not (tmp_path / name).exists(), name
    assert not list(tmp_path.iterdir())  # no temporary file left either


def test_writers_refuse_scores_and_grades_the_readers_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"score nan of document 'd' for query 'q' is not finite"):
        write_run(tmp_path / "r.trec", {"q": {"e": 1.0, "d": float("nan")}})
    for rel in (2**31, 1.5, True):
        with pytest.raises(DataError, match="is not a 32-bit integer"):
            write_qrels(tmp_path / "q.txt", {"q": {"d": rel}})  # type: ignore[dict-item]
    assert not list(tmp_path.iterdir())
    import numpy as np

    write_qrels(tmp_path / "q.txt", {"q": {"d": np.int64(2)}})  # type: ignore[dict-item]
    assert read_qrels(tmp_path / "q.txt") == {"q": {"d": 2}}


def test_a_line_past_the_limit_is_refused_naming_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file without line breaks (/dev/zero, a binary blob) used to be read whole: a MemoryError."""
    import gzip

    from distill.core import formats
    from distill.core.label_files import valid_qids

    monkeypatch.setattr(formats, "MAX_LINE_CHARS", 64)
    short = "1 Q0 a 1 1.0 t\n"
    _write(tmp_path, "run.trec", short + "1 Q0 " + "b" * 60 + " 2 0.5 t\n")
    with pytest.raises(DataError, match=r"run\.trec: line 2 runs past 64 characters without a line break"):
        read_run(tmp_path / "run.trec")
    (tmp_path / "run.trec.gz").write_bytes(gzip.compress((short + "x" * 10_000).encode()))
    with pytest.raises(DataError, match=r"run\.trec\.gz: line 2 runs past 64 characters"):
        read_run(tmp_path / "run.trec.gz")
    at_limit = "1 Q0 " + "c" * 50 + " 1 1.0 t\n"
    assert len(at_limit) == 64 and read_run(_write(tmp_path, "ok.trec", at_limit)) == {"1": {"c" * 50: 1.0}}
    import distill.core.label_files as label_files

    monkeypatch.setattr(label_files, "MAX_LINE_CHARS", 16)
    (tmp_path / "labels.jsonl").write_text("{" + " " * 100 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.jsonl: line 1 runs past 64 bytes"):
        valid_qids(tmp_path / "labels.jsonl")


def test_json_readers_refuse_lone_surrogates(tmp_path: Path) -> None:
    """JSON's \\ud800 escape decodes to a lone surrogate, which no UTF-8 writer or tokenizer can take."""
    with pytest.raises(DataError, match=r'c\.jsonl:2: field "text" holds a lone surrogate'):
        read_corpus(_write(tmp_path, "c.jsonl", '{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "x \\udfff"}\n'))
    with pytest.raises(DataError, match=r'q\.jsonl:1: field "_id" holds a lone surrogate'):
        read_queries(_write(tmp_path, "q.jsonl", '{"_id": "\\ud83d", "text": "x"}\n'))
    pair = read_queries(_write(tmp_path, "q2.jsonl", '{"_id": "1", "text": "\\ud83d\\ude00"}\n'))
    assert pair["1"].text == "\U0001f600"  # a surrogate pair is one character


def test_a_trec_query_called_qid_is_not_a_header(tmp_path: Path) -> None:
    """Only BEIR's header (query-id, corpus-id, score) is skipped; a first judgment of query "qid" was dropped."""
    assert read_qrels(_write(tmp_path, "q.txt", "qid 0 d1 1\nq2 0 d2 1\n")) == {"qid": {"d1": 1}, "q2": {"d2": 1}}
    assert read_qrels(_write(tmp_path, "b.tsv", "query-id\tcorpus-id\tscore\nqid\td1\t1\n")) == {"qid": {"d1": 1}}


@pytest.mark.parametrize(("content", "match"), [
    ("1\t\t1\n", r"q\.txt:1: empty document id"),
    ("\td1\t1\n", r"q\.txt:1: empty query id"),
    ("1 0 d1 １\n", r"q\.txt:1: relevance '１' is not a number"),
    ("1 0 d1 1_0\n", r"q\.txt:1: relevance '1_0' is not a number"),
])
def test_qrels_ids_are_non_empty_and_grades_ascii(tmp_path: Path, content: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_qrels(_write(tmp_path, "q.txt", content))


def test_run_numbers_are_ascii(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"r\.trec:1: score '٢' is not a number"):
        read_run(_write(tmp_path, "r.trec", "1 Q0 a 1 ٢ t\n"))


def test_a_json_integer_past_pythons_digit_limit_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"c\.jsonl:1: invalid JSON \(Exceeds the limit"):
        read_corpus(_write(tmp_path, "c.jsonl", '{"_id": ' + "1" * 5000 + ', "text": "x"}\n'))


def test_an_id_starting_with_a_byte_order_mark_is_refused_where_written(tmp_path: Path) -> None:
    """Readers drop U+FEFF at the start of a file, so the id would not read back."""
    with pytest.raises(DataError, match=r"query id '\\ufeffq'"):
        write_queries(tmp_path / "q.tsv", [Query("\ufeffq", "x")])


def test_scores_that_6_decimals_would_tie_keep_their_order(tmp_path: Path) -> None:
    """Evaluation re-sorts by score: 0.99999996 and 0.99999991 written as 1.000000 both would rank by doc id."""
    run = {"q": {"z": 0.99999996, "a": 0.99999991, "m": 0.5}, "q2": {"a": 2.0, "b": 1.0}}
    out = write_run(tmp_path / "r.trec", run)
    lines = out.read_text().splitlines()
    assert lines[0] == "q Q0 z 1 0.99999996 distilrank" and lines[1] == "q Q0 a 2 0.99999991 distilrank"
    assert lines[3] == "q2 Q0 a 1 2.000000 distilrank"  # 6 decimals where they keep the order
    assert read_run(out) == run
    qrels = {"q": {"z": 1}}
    from distill.core.evaluation import evaluate

    assert evaluate(qrels, read_run(out), ["mrr@10"]).metrics["mrr@10"] == 1.0
