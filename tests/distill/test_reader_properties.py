"""Property tests of the data readers: what a writer writes reads back the same, and garbage is a DataError.

The readers for corpus, queries, qrels, runs and teacher labels take user files of any size and origin, so
for each: (1) a write -> read round trip returns what was written, for any ids the writers accept and any
text; (2) any bytes -- plain, gzip or bz2, random or built from the format's own tokens -- either read or
raise :class:`~distill.core.errors.DataError` (exit 4), never another exception (a traceback, exit 1).
"""

from __future__ import annotations

import bz2
import gzip
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from distill.core.errors import DataError, MissingPrerequisiteError  # noqa: E402
from distill.core.formats import (  # noqa: E402
    Document,
    Query,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    write_corpus,
    write_qrels,
    write_queries,
    write_run,
)
from distill.core.label_files import (  # noqa: E402
    LabeledDoc,
    LabeledQuery,
    LabelsTeacher,
    append_labels,
    read_labels,
    read_teacher,
    start_labels,
    valid_qids,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# any Unicode text a UTF-8 file can hold (no lone surrogates)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# ids as the writers accept them: no whitespace, control characters, surrogates or U+FEFF
ID = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                           blacklist_characters="\x1c\x1d\x1e\x1f\x85\ufeff\u180e\u200b"),
             min_size=1, max_size=12).filter(lambda s: not any(c.isspace() for c in s))
SCORE = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9) | st.sampled_from(
    [0.9999999, 0.99999991, 0.99999996, 1.0, 1e-7, 2e-7, 0.0])  # distinct scores that 6 decimals would tie
GRADE = st.integers(-(2**31), 2**31 - 1)


def _in_dir(test: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        test(Path(tmp))


@SETTINGS
@given(st.dictionaries(ID, st.tuples(TEXT, TEXT), min_size=1, max_size=8),
       st.sampled_from([".jsonl", ".tsv", ".jsonl.gz"]))
def test_corpus_round_trip(docs: dict[str, tuple[str, str]], suffix: str) -> None:
    def check(tmp: Path) -> None:
        written = [Document(d, title, text) for d, (title, text) in docs.items()]
        got = read_corpus(write_corpus(tmp / f"corpus{suffix}", written))
        if suffix == ".tsv":  # TSV has no room for tabs or line breaks: whitespace runs become one space
            written = [Document(d.doc_id, " ".join(d.title.split()), " ".join(d.text.split())) for d in written]
        assert list(got.values()) == written

    _in_dir(check)


@SETTINGS
@given(st.dictionaries(ID, TEXT.filter(str.strip), min_size=1, max_size=8), st.sampled_from([".tsv", ".tsv.bz2"]))
def test_queries_round_trip(queries: dict[str, str], suffix: str) -> None:
    def check(tmp: Path) -> None:
        got = read_queries(write_queries(tmp / f"queries{suffix}", [Query(q, t) for q, t in queries.items()]))
        assert {q: x.text for q, x in got.items()} == {q: " ".join(t.split()) for q, t in queries.items()}

    _in_dir(check)


@SETTINGS
@given(st.dictionaries(ID, st.dictionaries(ID, GRADE, min_size=1, max_size=5), min_size=1, max_size=5))
def test_qrels_round_trip(qrels: dict[str, dict[str, int]]) -> None:
    _in_dir(lambda tmp: _check_equal(read_qrels(write_qrels(tmp / "qrels.txt", qrels)), qrels))


def _check_equal(got: object, expected: object) -> None:
    assert got == expected


@SETTINGS
@given(st.dictionaries(ID, st.dictionaries(ID, SCORE, min_size=1, max_size=6), min_size=1, max_size=5),
       st.sampled_from(["run.trec", "run.trec.gz"]))
def test_run_round_trip(run: dict[str, dict[str, float]], name: str) -> None:
    """Scores keep 6 decimals (all of them where 6 would tie two different scores); the ranking read is the
    ranking written."""
    def check(tmp: Path) -> None:
        got = read_run(write_run(tmp / name, run, tag="t"))
        assert set(got) == set(run)
        for qid, docs in run.items():
            assert set(got[qid]) == set(docs)
            assert all(math.isclose(got[qid][d], s, rel_tol=1e-12, abs_tol=5.1e-7) for d, s in docs.items())
            assert _ranking(got[qid]) == _ranking(docs)

    _in_dir(check)


def _ranking(docs: dict[str, float]) -> list[str]:
    """Documents by score, equal scores in one group (their order is the evaluator's tie rule)."""
    order = sorted(docs, key=lambda d: (-docs[d], d))
    return [f"{d}|{sum(docs[e] == docs[d] for e in docs)}" for d in order]


LABELS = st.lists(st.builds(
    LabeledQuery, TEXT, TEXT,
    st.dictionaries(TEXT, st.tuples(st.floats(allow_nan=False, allow_infinity=False), TEXT), max_size=5).map(
        lambda docs: tuple(LabeledDoc(d, s, src) for d, (s, src) in docs.items()))), max_size=6)
JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | TEXT,
                          lambda inner: st.lists(inner, max_size=3), max_leaves=5)


PATH_RECORDS = st.dictionaries(TEXT, st.dictionaries(st.sampled_from(["path", "relative"]), TEXT), max_size=2)


@SETTINGS
@given(LABELS, st.builds(LabelsTeacher, TEXT, st.dictionaries(TEXT, JSON_VALUE, max_size=4), PATH_RECORDS),
       st.sampled_from(["labels.jsonl", "labels.jsonl.gz"]))
def test_labels_round_trip(records: list[LabeledQuery], teacher: LabelsTeacher, name: str) -> None:
    def check(tmp: Path) -> None:
        path = tmp / name
        start_labels(path, teacher)
        for record in records:
            append_labels(path, record)
        assert read_labels(path) == records
        assert read_teacher(path) == teacher
        assert valid_qids(path) == {r.qid for r in records}

    _in_dir(check)


# garbage: random bytes, and lines built from the formats' own tokens (which reach deeper into the parsers)
TOKENS = ["q1", "Q0", "d1", "0", "1", "-1", "2.5", "1e999", "nan", "-inf", "１", "1_0", "query-id", "qid", "{", "}",
          "[", "]", ":", ",", '"_id"', '"text"', '"title"', '"qid"', '"query"', '"docs"', '"doc_id"', '"score"',
          '"source"', '"labelled_by"', '"config"', '"paths"', "null", "true", "1" * 5000, '"\\ud800"', '"x"',
          "\t", " ", "\n", "\r", "\x00", "\u00a0", "\ufeff"]
LINES = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
# JSON-shaped lines with the formats' keys and odd values: wrong types, nan, 5000-digit integers, lone surrogates
KEYS = st.sampled_from(['"_id"', '"text"', '"title"', '"qid"', '"query"', '"docs"', '"doc_id"', '"score"', '"source"',
                        '"labelled_by"', '"config"', '"paths"', '"path"', '"relative"'])
SCALARS = st.sampled_from(["null", "true", "1", "-1", "2.5", "1e999", "NaN", "-Infinity", '"x"', '"1"', '""',
                           '"\\ud800"', '"a b"', "1" * 5000, "[" * 3000])
JSON_TEXT = st.recursive(SCALARS, lambda inner: (
    st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(KEYS, inner), max_size=4).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}")),
    max_leaves=12)
GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(LINES, JSON_TEXT), min_size=1, max_size=4).map("\n".join).map(
        lambda s: s.encode("utf-8", "surrogatepass")))
READERS: dict[str, Callable[[Path], object]] = {
    "corpus.jsonl": read_corpus, "corpus.tsv": read_corpus, "queries.tsv": read_queries,
    "queries.jsonl": read_queries, "qrels.txt": read_qrels, "run.trec": read_run, "labels.jsonl": read_labels,
    "labels2.jsonl": valid_qids, "noext": read_corpus,
}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@SETTINGS
@given(GARBAGE, st.sampled_from(sorted(READERS)), st.sampled_from(["", ".gz", ".bz2"]))
def test_garbage_is_a_data_error(data: bytes, name: str, compression: str) -> None:
    packed = {"": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress}[compression](data)

    def check(tmp: Path) -> None:
        path = tmp / (name + compression)
        path.write_bytes(packed)
        try:
            READERS[name](path)
        except DataError:
            pass
        except MissingPrerequisiteError:  # zstd magic without the zstandard package: exit 3, naming it
            assert packed.startswith(ZSTD_MAGIC) or data.startswith(ZSTD_MAGIC)

    _in_dir(check)


@pytest.mark.parametrize("data", [b"\x1f\x8b\x08\x00junk", b"BZh9junk", ZSTD_MAGIC + b"junk", b"\xff\xfe\x00"])
def test_broken_compressed_streams_are_data_errors(tmp_path: Path, data: bytes) -> None:
    pytest.importorskip("zstandard") if data.startswith(ZSTD_MAGIC) else None
    (tmp_path / "run.trec").write_bytes(data)
    with pytest.raises(DataError, match=r"run\.trec"):
        read_run(tmp_path / "run.trec")
