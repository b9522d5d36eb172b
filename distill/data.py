"""IR data formats: the one module that reads and writes corpora, queries, qrels and runs.

Supported shapes (chosen by file content, not only extension):

* corpus: BEIR JSONL (``{"_id", "title", "text"}``) or MS MARCO TSV (``id<TAB>text``)
* queries: TSV (``qid<TAB>text``) or BEIR JSONL (``{"_id", "text"}``)
* qrels: TREC (``qid 0 docid rel``, whitespace separated) or BEIR TSV with a header
  (``query-id<TAB>corpus-id<TAB>score``)
* runs: TREC 6 columns (``qid Q0 docid rank score tag``)

Every reader validates as it goes: a malformed line raises :class:`~distill.errors.DataError`
naming the file, the 1-based line number, what was wrong and the expected shape.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from distill.atomic_io import atomic_write
from distill.errors import DataError

__all__ = [
    "Document",
    "IdCheck",
    "Qrels",
    "Query",
    "Run",
    "check_ids",
    "iter_corpus",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "write_qrels",
    "write_queries",
    "write_run",
]

logger = logging.getLogger(__name__)

#: qrels[qid][doc_id] = graded relevance (int, 0 = judged non-relevant)
Qrels = dict[str, dict[str, int]]
#: run[qid][doc_id] = score (higher is better)
Run = dict[str, dict[str, float]]

_CORPUS_SHAPE = 'BEIR JSONL {"_id": str, "title": str, "text": str} or MS MARCO TSV "id<TAB>text"'
_QUERY_SHAPE = 'TSV "qid<TAB>text" or BEIR JSONL {"_id": str, "text": str}'
_QRELS_SHAPE = 'TREC "qid 0 docid rel" or BEIR TSV "query-id<TAB>corpus-id<TAB>score" with header'
_RUN_SHAPE = 'TREC "qid Q0 docid rank score tag"'


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        """Title and text joined the way every model in distilrank sees a document."""
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str


def _open(path: Path) -> Iterator[tuple[int, str]]:
    if not path.exists():
        raise DataError("file not found", path=path)
    with open(path, encoding="utf-8") as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 ({exc.reason})", path=path) from exc


def _is_jsonl(path: Path) -> bool:
    if path.suffix in {".jsonl", ".json"}:
        return True
    if path.suffix in {".tsv", ".txt", ".tab"}:
        return False
    for _, line in _open(path):
        return line.lstrip().startswith("{")
    return False


def _json_line(path: Path, lineno: int, line: str, expected: str) -> dict[str, object]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=path, line=lineno, expected=expected) from exc
    if not isinstance(obj, dict):
        raise DataError(f"a JSON {type(obj).__name__}, not an object", path=path, line=lineno, expected=expected)
    return obj


def _str_field(obj: Mapping[str, object], key: str, path: Path, lineno: int, expected: str, *, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise DataError(f'missing field "{key}"', path=path, line=lineno, expected=expected)
        return ""
    value = obj[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f'field "{key}" is {type(value).__name__}, not a string', path=path, line=lineno, expected=expected)
    return value


def iter_corpus(path: str | os.PathLike[str]) -> Iterator[Document]:
    """Stream documents; suitable for corpora that do not fit in memory."""
    path = Path(path)
    seen: set[str] = set()
    jsonl = _is_jsonl(path)
    for lineno, line in _open(path):
        if jsonl:
            obj = _json_line(path, lineno, line, _CORPUS_SHAPE)
            doc_id = _str_field(obj, "_id", path, lineno, _CORPUS_SHAPE)
            doc = Document(doc_id, _str_field(obj, "title", path, lineno, _CORPUS_SHAPE, required=False),
                           _str_field(obj, "text", path, lineno, _CORPUS_SHAPE))
        else:
            parts = line.split("\t")
            if len(parts) == 3:  # id<TAB>title<TAB>text is common too
                doc = Document(parts[0].strip(), parts[1].strip(), parts[2].strip())
            elif len(parts) == 2:
                doc = Document(parts[0].strip(), "", parts[1].strip())
            else:
                raise DataError(f"{len(parts)} tab-separated columns", path=path, line=lineno, expected=_CORPUS_SHAPE)
        if not doc.doc_id:
            raise DataError("empty document id", path=path, line=lineno, expected=_CORPUS_SHAPE)
        if doc.doc_id in seen:
            raise DataError(f"duplicate document id {doc.doc_id!r}", path=path, line=lineno, expected="unique ids")
        seen.add(doc.doc_id)
        yield doc


def read_corpus(path: str | os.PathLike[str]) -> dict[str, Document]:
    """Read a whole corpus into ``{doc_id: Document}`` (insertion order = file order)."""
    return {doc.doc_id: doc for doc in iter_corpus(path)}


def read_queries(path: str | os.PathLike[str]) -> dict[str, Query]:
    path = Path(path)
    jsonl = _is_jsonl(path)
    out: dict[str, Query] = {}
    for lineno, line in _open(path):
        if jsonl:
            obj = _json_line(path, lineno, line, _QUERY_SHAPE)
            qid = _str_field(obj, "_id", path, lineno, _QUERY_SHAPE)
            text = _str_field(obj, "text", path, lineno, _QUERY_SHAPE)
        else:
            parts = line.split("\t")
            if len(parts) != 2:
                raise DataError(f"{len(parts)} tab-separated columns", path=path, line=lineno, expected=_QUERY_SHAPE)
            qid, text = parts[0].strip(), parts[1].strip()
        if not qid:
            raise DataError("empty query id", path=path, line=lineno, expected=_QUERY_SHAPE)
        if not text.strip():
            raise DataError(f"query {qid!r} has empty text", path=path, line=lineno, expected=_QUERY_SHAPE)
        if qid in out:
            raise DataError(f"duplicate query id {qid!r}", path=path, line=lineno, expected="unique ids")
        out[qid] = Query(qid, text.strip())
    return out


def _parse_int(value: str, what: str, path: Path, lineno: int, expected: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{what} {value!r} is not a number", path=path, line=lineno, expected=expected) from None
    if not number.is_integer():
        raise DataError(f"{what} {value!r} is not an integer", path=path, line=lineno, expected=expected)
    return int(number)


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read TREC or BEIR-TSV qrels into ``{qid: {doc_id: rel}}``."""
    path = Path(path)
    out: Qrels = {}
    first = True
    for lineno, line in _open(path):
        if "\t" in line:
            parts = [p.strip() for p in line.split("\t")]
        else:
            parts = line.split()
        if first:
            first = False
            if parts[0].lower() in {"query-id", "query_id", "qid"}:
                continue  # BEIR header
        if len(parts) == 4:
            qid, _, doc_id, rel_s = parts
        elif len(parts) == 3:
            qid, doc_id, rel_s = parts
        else:
            raise DataError(f"{len(parts)} columns", path=path, line=lineno, expected=_QRELS_SHAPE)
        rel = _parse_int(rel_s, "relevance", path, lineno, _QRELS_SHAPE)
        out.setdefault(qid, {})[doc_id] = rel
    if not out:
        raise DataError("no judgments", path=path, expected=_QRELS_SHAPE)
    return out


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run into ``{qid: {doc_id: score}}``."""
    path = Path(path)
    out: Run = {}
    for lineno, line in _open(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{len(parts)} columns", path=path, line=lineno, expected=_RUN_SHAPE)
        qid, _, doc_id, rank_s, score_s, _ = parts
        _parse_int(rank_s, "rank", path, lineno, _RUN_SHAPE)
        try:
            score = float(score_s)
        except ValueError:
            raise DataError(f"score {score_s!r} is not a number", path=path, line=lineno, expected=_RUN_SHAPE) from None
        if not math.isfinite(score):
            raise DataError(f"score {score_s!r} is not finite", path=path, line=lineno, expected=_RUN_SHAPE)
        docs = out.setdefault(qid, {})
        if doc_id in docs:
            raise DataError(f"document {doc_id!r} listed twice for query {qid!r}", path=path, line=lineno, expected="one line per (qid, docid)")
        docs[doc_id] = score
    if not out:
        raise DataError("empty run", path=path, expected=_RUN_SHAPE)
    return out


def write_run(path: str | os.PathLike[str], run: Mapping[str, Mapping[str, float]], tag: str = "distilrank", top_k: int | None = None) -> Path:
    """Write a TREC run atomically, each query's docs sorted by score (ties by doc id)."""
    path = Path(path)
    with atomic_write(path) as fh:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            if top_k is not None:
                ranked = ranked[:top_k]
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                fh.write(f"{qid} Q0 {doc_id} {rank} {float(score):.6f} {tag}\n")
    return path


def write_queries(path: str | os.PathLike[str], queries: Iterable[Query]) -> Path:
    with atomic_write(path) as fh:
        for q in queries:
            text = " ".join(q.text.split())
            fh.write(f"{q.qid}\t{text}\n")
    return Path(path)


def write_qrels(path: str | os.PathLike[str], qrels: Mapping[str, Mapping[str, int]]) -> Path:
    with atomic_write(path) as fh:
        for qid, docs in qrels.items():
            for doc_id, rel in docs.items():
                fh.write(f"{qid} 0 {doc_id} {int(rel)}\n")
    return Path(path)


@dataclass
class IdCheck:
    """Ids in qrels or a run that the corpus (or query set) does not know."""

    unknown_docs: int = 0
    unknown_queries: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unknown_docs or self.unknown_queries)

    def describe(self, what: str) -> str:
        return (f"{what}: {self.unknown_docs} entries with document ids unknown to the corpus, "
                f"{self.unknown_queries} with unknown query ids (e.g. {', '.join(self.examples[:5])})")


def check_ids(pairs: Mapping[str, Mapping[str, object]], doc_ids: Iterable[str] | None = None,
              qids: Iterable[str] | None = None) -> IdCheck:
    """Count (qid, doc_id) entries whose ids are unknown; nothing is dropped."""
    known_docs = set(doc_ids) if doc_ids is not None else None
    known_q = set(qids) if qids is not None else None
    res = IdCheck()
    for qid, docs in pairs.items():
        if known_q is not None and qid not in known_q:
            res.unknown_queries += len(docs)
            if len(res.examples) < 5:
                res.examples.append(f"query {qid!r}")
        if known_docs is not None:
            for doc_id in docs:
                if doc_id not in known_docs:
                    res.unknown_docs += 1
                    if len(res.examples) < 5:
                        res.examples.append(f"doc {doc_id!r} (query {qid!r})")
    return res
