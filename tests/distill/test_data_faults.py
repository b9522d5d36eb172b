"""Fault table for the data readers and the retrieve/evaluate commands: one row per bad input.

Each row runs ``distilrank`` in-process and asserts the exit code from the one table
(2 bad arguments, 4 bad data), that stderr names the file and line where there is one, and that no
Python traceback escapes. Every row failed on the code before issue 15 (a traceback, SIGABRT inside
trec_eval, exit 0 with nothing, a wrong exit code or a message without the line).
"""

from __future__ import annotations

import bz2
import gzip
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


def _evaluate(*extra: str, qrels: str = "qrels.txt", run: str = "run.trec") -> list[str]:
    return ["evaluate", "--qrels", "{tmp}/" + qrels, "--run", "{tmp}/" + run, *extra]


def _bm25(corpus: str = "corpus.jsonl", queries: str = "queries.tsv") -> list[str]:
    return ["retrieve", "bm25", "--corpus", "{tmp}/" + corpus, "--queries", "{tmp}/" + queries, "--out", "{tmp}/out.trec"]


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
    Fault("corpus of stop words only", {"corpus.jsonl": '{"_id": "a", "text": "the of and"}\n{"_id": "b", "text": "a an"}\n',
                                        "queries.tsv": GOOD_QUERIES},
          _bm25(), 4, ("no indexable terms",)),
    Fault("empty queries file", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv": "\n"}, _bm25(), 4,
          ("queries.tsv", "no queries")),
    Fault("empty corpus file", {"corpus.jsonl": "", "queries.tsv": GOOD_QUERIES}, _bm25(), 4,
          ("corpus.jsonl", "no documents")),
    Fault("gz queries bad line", {"corpus.jsonl": GOOD_CORPUS, "queries.tsv.gz": gzip.compress(b"1\tsolar\n2 no tab\n")},
          _bm25(queries="queries.tsv.gz"), 4, ("queries.tsv.gz:2", "tab-separated")),
    Fault("gz corpus bad JSON line", {"corpus.jsonl.gz": gzip.compress(b'{"_id": "a", "text": "x y"}\n{"_id": \n'),
                                      "queries.tsv": GOOD_QUERIES},
          _bm25(corpus="corpus.jsonl.gz"), 4, ("corpus.jsonl.gz:2", "invalid JSON")),
    Fault("gz TSV corpus bad line", {"corpus.tsv.gz": gzip.compress(b"a\tsolar energy\nb\n"), "queries.tsv": GOOD_QUERIES},
          _bm25(corpus="corpus.tsv.gz"), 4, ("corpus.tsv.gz:2", "1 tab-separated columns")),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
