"""Fault table for the data readers and the retrieve/evaluate commands: one row per bad input.

Each row runs ``distilrank`` in-process and asserts the exit code from the one table
(2 bad arguments, 4 bad data), that stderr names the file and line where there is one, and that no
Python traceback escapes, that every input file is as it was and that no listed output is left behind.
Every row failed on the code it was written for (a traceback, SIGABRT inside trec_eval, a MemoryError,
exit 0 with nothing or with a wrong result, a wrong exit code or a message without the line).
"""

from __future__ import annotations

import bz2
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from distill.cli import main

pytestmark = pytest.mark.faults

GOOD_QRELS = "1 0 a 1\n2 0 b 1\n"
GOOD_RUN = "1 Q0 a 1 2.0 t\n2 Q0 b 1 1.0 t\n"
GOOD_CORPUS = '{"_id": "a", "title": "", "text": "solar energy"}\n{"_id": "b", "title": "", "text": "wind power"}\n'
GOOD_QUERIES = "1\tsolar\n2\twind\n"


@dataclass(frozen=True)
class Fault:
    name: str
    files: dict[str, str | bytes]
    argv: list[str]
    code: int
    stderr: tuple[str, ...] = ()
    #: outputs that must not exist afterwards (nothing half-written)
    absent: tuple[str, ...] = ()
    #: a module the command needs (its install extra); the row is skipped without it
    needs: str | None = None


def _evaluate(*extra: str, qrels: str = "qrels.txt", run: str = "run.trec") -> list[str]:
    return ["evaluate", "--qrels", "{tmp}/" + qrels, "--run", "{tmp}/" + run, *extra]


def _bm25(*extra: str, corpus: str = "corpus.jsonl", queries: str = "queries.tsv") -> list[str]:
    return ["retrieve", "bm25", "--corpus", "{tmp}/" + corpus, "--queries", "{tmp}/" + queries,
            "--out", "{tmp}/out.trec", *extra]


def _labels_begun_by(config: dict[str, object]) -> str:
    """A labels file a stopped ``teacher label`` left: its header and one query."""
    header = {"labelled_by": {"source": config.pop("source"), "config": config, "paths": {}}}
    record = {"qid": "1", "query": "solar", "docs": [{"doc_id": "a", "score": 1.5, "source": "bm25"}]}
    return json.dumps(header) + "\n" + json.dumps(record) + "\n"


_LABEL = ["teacher", "label", "--out", "{tmp}/labels", "--queries", "{tmp}/queries.tsv",
          "--corpus", "{tmp}/corpus.jsonl", "--n-dense", "0", "--n-bm25", "2", "--n-random", "0"]
_BM25_LABELS = {"n_bm25": 2, "n_dense": 0, "n_random": 0, "seed": 13, "positives": False}


FAULTS = [
    # qrels
    Fault("qrels conflicting duplicate", {"qrels.txt": "1 0 a 1\n2 0 b 1\n1 0 a 2\n", "run.trec": GOOD_RUN},
          _evaluate(), 4, ("qrels.txt:3", "line 1")),
    Fault("qrels conflicting duplicate, BEIR TSV", {"qrels.tsv": "query-id\tcorpus-id\tscore\n1\ta\t1\n1\ta\t0\n",
                                                    "run.trec": GOOD_RUN},
          _evaluate(qrels="qrels.tsv"), 4, ("qrels.tsv:3", "line 2")),
    Fault("qrels relevance 1e30", {"qrels.txt": "1 0 a 1e30\n", "run.trec": GOOD_RUN}, _evaluate(), 4,
          ("qrels.txt:1", "32-bit")),
    Fault("qrels relevance -3e9", {"qrels.txt": "1 0 a 1\n1 0 b -3000000000\n", "run.trec": GOOD_RUN}, _evaluate(), 4,
          ("qrels.txt:2", "32-bit")),
    Fault("gz qrels bad line", {"qrels.txt.gz": gzip.compress(b"1 0 a 1\n1 0 b high\n"), "run.trec": GOOD_RUN},
          _evaluate(qrels="qrels.txt.gz"), 4, ("qrels.txt.gz:2", "not a number")),
    Fault("truncated gz qrels", {"qrels.txt.gz": gzip.compress(GOOD_QRELS.encode() * 50)[:-12], "run.trec": GOOD_RUN},
          _evaluate(qrels="qrels.txt.gz"), 4, ("qrels.txt.gz", "corrupt or truncated compressed data")),
    # runs
    Fault("gz run bad line", {"qrels.txt": GOOD_QRELS, "run.trec.gz": gzip.compress(b"1 Q0 a 1 2.0 t\n1 Q0 b 2\n")},
          _evaluate(run="run.trec.gz"), 4, ("run.trec.gz:2", "4 columns")),
    Fault("bz2 run bad score", {"qrels.txt": GOOD_QRELS, "run.trec.bz2": bz2.compress(b"1 Q0 a 1 nan t\n")},
          _evaluate(run="run.trec.bz2"), 4, ("run.trec.bz2:1", "not finite")),
    Fault("--run is a directory", {"qrels.txt": GOOD_QRELS, "runs/x.trec": GOOD_RUN},
          ["evaluate", "--qrels", "{tmp}/qrels.txt", "--run", "{tmp}/runs"], 2, ("runs", "is a directory")),
    Fault("--run NAME= with empty path", {"qrels.txt": GOOD_QRELS},
          ["evaluate", "--qrels", "{tmp}/qrels.txt", "--run", "x="], 2, ("--run 'x='", "empty path")),
    # metrics
    Fault("--metrics ndcg@0 (SIGABRT in trec_eval)", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN},
          _evaluate("--metrics", "ndcg@0"), 2, ("ndcg@0", "between 1 and")),
    Fault("--metrics recall@0", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN},
          _evaluate("--metrics", "ndcg@10,recall@0"), 2, ("recall@0",)),
    Fault("--metrics map@0", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN},
          _evaluate("--metrics", "map@0"), 2, ("map@0",)),
    Fault("--metrics , (empty list)", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN},
          _evaluate("--metrics", ","), 2, ("no metric",)),
    # outputs
    Fault("--json under a file", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN, "blocker": "x"},
          _evaluate("--json", "{tmp}/blocker/m.json"), 2, ("blocker/m.json",)),
    Fault("retrieve --out under a file", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES, "blocker": "x"},
          ["retrieve", "bm25", "--corpus", "{tmp}/corpus.jsonl", "--queries", "{tmp}/queries.tsv",
           "--out", "{tmp}/blocker/run.trec"], 2, ("blocker/run.trec",)),
    # retrieve inputs
    Fault("corpus of stop words only", {"corpus.jsonl": '{"_id": "a", "text": "the of and"}\n'
                                                        '{"_id": "b", "text": "a an"}\n',
                                        "queries.tsv": GOOD_QUERIES},
          _bm25(), 4, ("no indexable terms",)),
    Fault("empty queries file", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": "\n"}, _bm25(), 4,
          ("queries.tsv", "no queries")),
    Fault("empty corpus file", {"corpus.jsonl": "", "queries.tsv": GOOD_QUERIES}, _bm25(), 4,
          ("corpus.jsonl", "no documents")),
    Fault("gz queries bad line", {"corpus.jsonl": GOOD_CORPUS,
                                  "queries.tsv.gz": gzip.compress(b"1\tsolar\n2 no tab\n")},
          _bm25(queries="queries.tsv.gz"), 4, ("queries.tsv.gz:2", "tab-separated")),
    Fault("gz corpus bad JSON line", {"corpus.jsonl.gz": gzip.compress(b'{"_id": "a", "text": "x y"}\n{"_id": \n'),
                                      "queries.tsv": GOOD_QUERIES},
          _bm25(corpus="corpus.jsonl.gz"), 4, ("corpus.jsonl.gz:2", "invalid JSON")),
    Fault("gz TSV corpus bad line", {"corpus.tsv.gz": gzip.compress(b"a\tsolar energy\nb\n"),
                                     "queries.tsv": GOOD_QUERIES},
          _bm25(corpus="corpus.tsv.gz"), 4, ("corpus.tsv.gz:2", "1 tab-separated columns")),
    # numbers on the command line: finite, in range, ASCII digits
    Fault("--rel-threshold 99999999999 (TypeError in pytrec_eval)", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN},
          _evaluate("--rel-threshold", "99999999999"), 2, ("--rel-threshold", "1 <= x <= 2147483647")),
    Fault("--k1 nan (an empty run, exit 0)", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES},
          _bm25("--k1", "nan"), 2, ("--k1", "finite"), absent=("out.trec",)),
    Fault("--k1 1e999 (inf)", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES},
          _bm25("--k1", "1e999"), 2, ("--k1", "finite"), absent=("out.trec",)),
    Fault("--k1 1e300 (every score 0)", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES},
          _bm25("--k1", "1e300"), 2, ("--k1", "0 <= x <= 100"), absent=("out.trec",)),
    Fault("--b 1.5", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES},
          _bm25("--b", "1.5"), 2, ("--b", "0 <= x <= 1"), absent=("out.trec",)),
    Fault("--top-k in full-width digits", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES},
          _bm25("--top-k", "１０"), 2, ("--top-k", "ASCII digits"), absent=("out.trec",)),
    Fault("--metrics ndcg@１０ (non-ASCII digits: 0.0, exit 0)", {"qrels.txt": GOOD_QRELS, "run.trec": GOOD_RUN},
          _evaluate("--metrics", "ndcg@１０"), 2, ("ndcg@１０", "ASCII digits")),
    # a file without line breaks is refused at the line limit, not read whole
    Fault("--run /dev/zero (MemoryError)", {"qrels.txt": GOOD_QRELS},
          ["evaluate", "--qrels", "{tmp}/qrels.txt", "--run", "/dev/zero"], 4,
          ("/dev/zero", "line 1", "without a line break")),
    Fault("--corpus /dev/zero", {"queries.tsv": GOOD_QUERIES},
          ["retrieve", "bm25", "--corpus", "/dev/zero", "--queries", "{tmp}/queries.tsv", "--out", "{tmp}/out.trec"], 4,
          ("/dev/zero", "without a line break"), absent=("out.trec",)),
    # ids are checked where runs are written
    Fault("doc id with a space (7-column run, exit 0)",
          {"corpus.jsonl": GOOD_CORPUS.replace('"_id": "a"', '"_id": "a b"'), "queries.tsv": GOOD_QUERIES},
          _bm25(), 4, ("out.trec", "document id 'a b' (query '1')", "whitespace"), absent=("out.trec",)),
    Fault("query id with a tab", {"corpus.jsonl": GOOD_CORPUS,
                                  "queries.jsonl": '{"_id": "q\\t1", "text": "solar"}\n{"_id": "2", "text": "wind"}\n'},
          _bm25(queries="queries.jsonl"), 4, ("query id 'q\\t1'",), absent=("out.trec",)),
    Fault("doc id with a no-break space", {"corpus.jsonl": GOOD_CORPUS.replace('"_id": "b"', '"_id": "b\\u00a0c"'),
                                           "queries.tsv": GOOD_QUERIES},
          _bm25(), 4, ("document id 'b\\xa0c'",), absent=("out.trec",)),
    Fault("query with a lone surrogate", {"corpus.jsonl": GOOD_CORPUS,
                                          "queries.jsonl": '{"_id": "1", "text": "solar \\ud800"}\n'},
          _bm25(queries="queries.jsonl"), 4, ("queries.jsonl:1", "lone surrogate"), absent=("out.trec",)),
    # a labels file records its teacher
    Fault("teacher label resumed with another source (two teachers in one file, exit 0)",
          {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES,
           "labels/labels.jsonl": _labels_begun_by({"source": "endpoint", "endpoint_model": "big", **_BM25_LABELS})},
          [*_LABEL, "--source", "bm25"], 2, ("source 'endpoint'", "source 'bm25'", "endpoint_model: 'big' vs None"),
          absent=("labels/manifest.json",), needs="torch"),
    Fault("teacher label resumed with other candidates", {
        "corpus.jsonl": GOOD_CORPUS, "queries.tsv": GOOD_QUERIES,
        "labels/labels.jsonl": _labels_begun_by({"source": "bm25", **_BM25_LABELS, "n_random": 5})},
          [*_LABEL, "--source", "bm25"], 2, ("source 'bm25'", "n_random: 5 vs 0"), absent=("labels/manifest.json",),
          needs="torch"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if fault.needs:
        pytest.importorskip(fault.needs)
    for name, content in fault.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in fault.argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == fault.code, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith(("error:", "Error:"))]) == 1, err
    for needle in fault.stderr:
        assert needle in err, err
    for name in fault.absent:
        assert not (tmp_path / name).exists(), name
    for name, content in fault.files.items():  # nothing lost: every input is as it was
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        assert (tmp_path / name).read_bytes() == data, name
