"""Compressed and BOM-prefixed inputs give the same numbers as plain files, through the CLI."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.formats import (
    Document,
    iter_corpus,
    open_text,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    text_suffix,
    write_corpus,
    write_qrels,
    write_queries,
    write_run,
)
from distill.core.label_files import LabeledDoc, LabeledQuery, append_labels, read_labels, valid_qids

BOM = "\ufeff"


def _gzip(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(src.read_bytes()))
    return dst


def _bm25_then_evaluate(tmp: Path, corpus: Path, queries: Path, qrels: Path, run_name: str) -> dict[str, object]:
    run = tmp / run_name
    assert main(["retrieve", "bm25", "--corpus", str(corpus), "--queries", str(queries), "--top-k", "100",
                 "--out", str(run)]) == 0
    out = tmp / f"{run_name}.metrics.json"
    assert main(["evaluate", "--qrels", str(qrels), "--run", str(run), "--json", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def plain_metrics(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("plain")
    return _bm25_then_evaluate(tmp, demo_data / "corpus.jsonl", demo_data / "queries.test.tsv",
                               demo_data / "qrels.test.txt", "plain.trec")


def test_gzipped_jsonl_corpus_queries_qrels_and_run_through_the_cli(demo_data: Path, tmp_path: Path,
                                                                     plain_metrics: dict[str, object]) -> None:
    corpus = _gzip(demo_data / "corpus.jsonl", tmp_path / "corpus.jsonl.gz")
    queries = _gzip(demo_data / "queries.test.tsv", tmp_path / "queries.tsv.gz")
    qrels = _gzip(demo_data / "qrels.test.txt", tmp_path / "qrels.txt.gz")
    metrics = _bm25_then_evaluate(tmp_path, corpus, queries, qrels, "bm25.trec.gz")  # the run is written gzipped
    assert (tmp_path / "bm25.trec.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert metrics == plain_metrics


def test_gzipped_tsv_corpus_and_jsonl_queries(demo_data: Path, tmp_path: Path,
                                              plain_metrics: dict[str, object]) -> None:
    corpus = write_corpus(tmp_path / "corpus.tsv.gz", iter_corpus(demo_data / "corpus.jsonl"))
    assert text_suffix(corpus) == ".tsv" and gzip.decompress(corpus.read_bytes()).count(b"\t") > 2000
    queries = tmp_path / "queries.jsonl.gz"
    with gzip.open(queries, "wt", encoding="utf-8") as fh:
        for q in read_queries(demo_data / "queries.test.tsv").values():
            fh.write(json.dumps({"_id": q.qid, "text": q.text}) + "\n")
    qrels = tmp_path / "qrels.txt.bz2"
    qrels.write_bytes(bz2.compress((demo_data / "qrels.test.txt").read_bytes()))
    assert _bm25_then_evaluate(tmp_path, corpus, queries, qrels, "bm25.trec") == plain_metrics


def test_content_sniffing_looks_through_the_compression_suffix(tmp_path: Path) -> None:
    # no format suffix under .gz: the JSONL shape is recognised from the decompressed content
    path = tmp_path / "corpus.gz"
    path.write_bytes(gzip.compress(b'{"_id": "d1", "title": "T", "text": "x"}\n'))
    assert read_corpus(path)["d1"].full_text == "T. x"
    # compression is recognised by magic bytes even under a misleading name
    odd = tmp_path / "qrels.txt"
    odd.write_bytes(gzip.compress(b"1 0 d1 1\n"))
    assert read_qrels(odd) == {"1": {"d1": 1}}


def test_writers_compress_by_suffix_and_round_trip(tmp_path: Path) -> None:
    run = {"q1": {"a": 2.0, "b": 1.0}}
    for suffix, magic in ((".gz", b"\x1f\x8b"), (".bz2", b"BZh")):
        assert write_run(tmp_path / f"r.trec{suffix}", run).read_bytes()[:len(magic)] == magic
        assert read_run(tmp_path / f"r.trec{suffix}") == run
        write_qrels(tmp_path / f"q.txt{suffix}", {"q1": {"a": 2}})
        assert read_qrels(tmp_path / f"q.txt{suffix}") == {"q1": {"a": 2}}
    # gzip's mtime is pinned, so equal content gives equal bytes (stable hashes in manifests)
    assert write_run(tmp_path / "x.gz", run).read_bytes() == write_run(tmp_path / "y.gz", run).read_bytes()
    from distill.core.formats import Query

    write_queries(tmp_path / "q.tsv.gz", [Query("1", "two  words")])
    assert read_queries(tmp_path / "q.tsv.gz")["1"].text == "two words"
    write_corpus(tmp_path / "c.jsonl.gz", [Document("d", "T", "x")])
    assert read_corpus(tmp_path / "c.jsonl.gz")["d"] == Document("d", "T", "x")


def test_gzipped_labels_append_read_and_resume_after_a_torn_member(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl.gz"
    for i in range(3):
        append_labels(path, LabeledQuery(f"q{i}", "query", (LabeledDoc("d1", 1.5, "bm25"),)))
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert [r.qid for r in read_labels(path)] == ["q0", "q1", "q2"]
    good = path.read_bytes()
    append_labels(path, LabeledQuery("q3", "query", (LabeledDoc("d2", 0.5, "bm25"),) * 1))
    path.write_bytes(path.read_bytes()[: len(good) + 12])  # a crash in the middle of the 4th member
    assert valid_qids(path) == {"q0", "q1", "q2"}  # the torn member is cut off...
    append_labels(path, LabeledQuery("q3", "query", (LabeledDoc("d2", 0.5, "bm25"),)))
    assert [r.qid for r in read_labels(path)] == ["q0", "q1", "q2", "q3"]  # ...and appending resumes cleanly


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path: Path) -> None:
    """Old code read '\\ufeff1' as the first qid: query 1 silently lost its judgments (wrong nDCG)."""
    (tmp_path / "qrels.txt").write_text(BOM + "1 0 a 1\n2 0 b 1\n", encoding="utf-8")
    (tmp_path / "run.trec").write_text(BOM + "1 Q0 a 1 2 t\n2 Q0 b 1 1 t\n", encoding="utf-8")
    (tmp_path / "queries.tsv").write_text(BOM + "1\tfirst\n", encoding="utf-8")
    (tmp_path / "corpus.tsv").write_text(BOM + "a\tsome text\n", encoding="utf-8")
    (tmp_path / "corpus.jsonl").write_text(BOM + '{"_id": "a", "text": "x"}\n', encoding="utf-8")
    assert read_qrels(tmp_path / "qrels.txt") == {"1": {"a": 1}, "2": {"b": 1}}
    assert list(read_run(tmp_path / "run.trec")) == ["1", "2"]
    assert list(read_queries(tmp_path / "queries.tsv")) == ["1"]
    assert list(read_corpus(tmp_path / "corpus.tsv")) == ["a"]
    assert list(read_corpus(tmp_path / "corpus.jsonl")) == ["a"]
    out = tmp_path / "m.json"
    assert main(["evaluate", "--qrels", str(tmp_path / "qrels.txt"), "--run", str(tmp_path / "run.trec"),
                 "--metrics", "ndcg@10", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ndcg@10"] == pytest.approx(1.0)


def test_identical_duplicate_qrels_are_kept_once_with_one_warning(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "qrels.txt").write_text("1 0 a 1\n1 0 a 1\n1 0 b 0\n1 0 a 1\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert read_qrels(tmp_path / "qrels.txt") == {"1": {"a": 1, "b": 0}}
    assert "qrels.txt:2: repeats the judgment of line 1" in caplog.text
    assert "2 repeated identical judgments" in caplog.text


def test_json_report_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    (tmp_path / "qrels.txt").write_text("1 0 a 1\n", encoding="utf-8")
    (tmp_path / "run.trec").write_text("1 Q0 a 1 2 t\n", encoding="utf-8")
    out = tmp_path / "new" / "deeper" / "m.json"
    assert main(["evaluate", "--qrels", str(tmp_path / "qrels.txt"), "--run", str(tmp_path / "run.trec"),
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ndcg@10"] == 1.0


def test_open_text_streams(tmp_path: Path) -> None:
    path = tmp_path / "big.txt.gz"
    with open_text(path, "w") as fh:
        for i in range(50_000):
            fh.write(f"{i} 0 d{i} 1\n")
    before = {p.name for p in tmp_path.iterdir()}
    with open_text(path) as fh:
        assert next(iter(fh)) == "0 0 d0 1\n"
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing decompressed to disk
