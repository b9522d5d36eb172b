"""IR data formats: the one module that reads and writes corpora, queries, qrels and runs.

Supported shapes (chosen by file content, not only extension):

* corpus: BEIR JSONL (``{"_id", "title", "text"}``) or MS MARCO TSV (``id<TAB>text``)
* queries: TSV (``qid<TAB>text``) or BEIR JSONL (``{"_id", "text"}``)
* qrels: TREC (``qid 0 docid rel``, whitespace separated) or BEIR TSV with a header
  (``query-id<TAB>corpus-id<TAB>score``)
* runs: TREC 6 columns (``qid Q0 docid rank score tag``)

Every reader validates as it goes: a malformed line raises :class:`~distill.core.errors.DataError`
naming the file, the 1-based line number, what was wrong and the expected shape.

Every file goes through one opener, :func:`open_text`: ``.gz`` and ``.bz2`` are decompressed as a
stream (``.zst`` too when the ``zstandard`` package is installed), writers compress when the path
ends in one of those suffixes, and a UTF-8 byte-order mark is dropped (Windows editors add one; read
as text it would silently become part of the first id). Format detection looks through the
compression suffix: ``corpus.jsonl.gz`` is JSONL.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import itertools
import json
import logging
import math
import numbers
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, AnyStr

from distill.core.atomic_io import atomic_write
from distill.core.errors import DataError, MissingPrerequisiteError
from distill.core.params import parse_ascii_float

__all__ = [
    "MAX_LINE_CHARS",
    "Document",
    "IdCheck",
    "Qrels",
    "Query",
    "Run",
    "check_ids",
    "compression_of",
    "bounded_lines",
    "check_id",
    "iter_corpus",
    "iter_lines",
    "open_text",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_run",
    "stream_errors",
    "text_suffix",
    "write_corpus",
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
#: trec_eval stores relevance in a C int; pytrec_eval raises OverflowError beyond it.
_INT32 = (-(2**31), 2**31 - 1)
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
#: the longest line any reader accepts: far above any real record (the longest BEIR document is under
#: 1 MB; a labels line of 1000 candidates is ~100 KB), low enough that a file without line breaks fails
#: with a message instead of a MemoryError
MAX_LINE_CHARS = 64 * 2**20
#: what an id may not contain: whitespace as ``str.split()`` sees it (it would add columns to a run or qrels
#: line), C0/C1 control characters (a NUL ends the id inside trec_eval), lone surrogates (not UTF-8) and
#: U+FEFF (readers drop it as a byte-order mark at the start of a file)
_BAD_ID_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff\ufeff]")
#: a lone surrogate: JSON's "\\ud800" escape decodes to one, but it is not Unicode text
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: what a broken compressed stream raises while being read
_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


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


def compression_of(path: str | os.PathLike[str]) -> str | None:
    """``"gzip"``, ``"bz2"``, ``"zstd"`` or None, from the last suffix of ``path``."""
    return _COMPRESSION.get(Path(path).suffix.lower())


def text_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix that names the format, looking through a compression suffix (``a.jsonl.gz`` -> ``.jsonl``)."""
    path = Path(path)
    if compression_of(path):
        path = path.with_suffix("")
    return path.suffix.lower()


def _zstd():  # -> module
    try:
        import zstandard
    except ImportError as exc:
        raise MissingPrerequisiteError("reading or writing .zst files needs zstandard: pip install zstandard") from exc
    return zstandard


_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd"}


def _sniff(raw: io.BufferedReader) -> str | None:
    head = raw.peek(4)[:4]
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _wrap_binary(raw: IO[bytes], kind: str | None, mode: str) -> IO[bytes]:
    """A (de)compressing binary stream over ``raw`` that never closes ``raw``; ``mode``: "rb", "wb", "ab"."""
    if kind == "gzip":
        # mtime=0: the same content compresses to the same bytes (stable hashes in manifests)
        return gzip.GzipFile(fileobj=raw, mode=mode, mtime=0)  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(raw, mode=mode)  # type: ignore[call-overload]
    if kind == "zstd":
        zstd = _zstd()
        if mode == "rb":
            return zstd.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        return zstd.ZstdCompressor().stream_writer(raw, closefd=False)
    return raw


@contextlib.contextmanager
def open_text(path: str | os.PathLike[str], mode: str = "r") -> Iterator[IO[str]]:
    """Open a text file, (de)compressing it; the one opener behind every reader and writer.

    ``mode`` "r": UTF-8 with a leading BOM dropped, decompressed as a stream (nothing is written
    to disk); compression is recognised by its magic bytes, whatever the suffix. "w": atomic
    (written beside ``path``, renamed into place on success), compressed when the suffix is
    ``.gz``/``.bz2``/``.zst``. "a": append, fsynced on close; on a compressed file each append adds
    a member, which readers see as one stream.
    """
    path = Path(path)
    if mode == "r":
        if path.is_dir():
            raise DataError("is a directory, not a file", path=path)
        if not path.exists():
            raise DataError("file not found", path=path)
        with open(path, "rb") as raw:
            binary = _wrap_binary(raw, _sniff(raw), "rb")
            with io.TextIOWrapper(binary, encoding="utf-8-sig") as fh:
                yield fh
        return
    if mode not in {"w", "a"}:
        raise ValueError(f"mode must be 'r', 'w' or 'a', not {mode!r}")
    kind = compression_of(path)
    opener = atomic_write(path, "wb") if mode == "w" else open(path, "ab")
    with opener as raw:
        binary = _wrap_binary(raw, kind, mode + "b")
        fh = io.TextIOWrapper(binary, encoding="utf-8", newline="\n", write_through=True)
        yield fh
        fh.flush()
        fh.detach()  # so that collecting the wrapper cannot close ``raw`` under atomic_write
        if binary is not raw:
            binary.close()  # writes the compressed stream's trailer
        if mode == "a":
            raw.flush()
            os.fsync(raw.fileno())


def bounded_lines(fh: IO[AnyStr], path: str | os.PathLike[str], limit: int | None = None,
                  expected: str = "a text file of one record per line") -> Iterator[AnyStr]:
    """The lines of ``fh`` (newline kept), each read with at most ``limit`` characters (bytes, for a binary
    ``fh``) in memory.

    A line longer than the limit is a :class:`DataError` naming the file and line, so a file with no
    newline at all (``/dev/zero``, a binary blob) fails fast instead of filling memory.
    """
    limit = MAX_LINE_CHARS if limit is None else limit
    for lineno in itertools.count(1):
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            unit = "bytes" if isinstance(line, bytes) else "characters"
            raise DataError(f"line {lineno} runs past {limit:,} {unit} without a line break", path=path,
                            expected=expected)
        yield line


def iter_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line without its newline)`` for every non-blank line of a text file.

    Lines are read with at most :data:`MAX_LINE_CHARS` characters in memory (:func:`bounded_lines`).
    """
    path = Path(path)
    lineno = 0
    with open_text(path) as fh:
        try:
            for lineno, raw in enumerate(bounded_lines(fh, path), start=1):
                line = raw.rstrip("\n").rstrip("\r")
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 ({exc.reason}) after line {lineno}", path=path) from exc
        except stream_errors() as exc:
            raise DataError(f"corrupt or truncated compressed data after line {lineno} ({exc})", path=path) from exc


def stream_errors() -> tuple[type[BaseException], ...]:
    """What a broken compressed stream raises while being read (zstandard's own error once it is loaded)."""
    zstd = sys.modules.get("zstandard")
    return (*_STREAM_ERRORS, zstd.ZstdError) if zstd is not None else _STREAM_ERRORS


def _is_jsonl(path: Path) -> bool:
    suffix = text_suffix(path)
    if suffix in {".jsonl", ".json"}:
        return True
    if suffix in {".tsv", ".txt", ".tab"}:
        return False
    for _, line in iter_lines(path):
        return line.lstrip().startswith("{")
    return False


def _json_line(path: Path, lineno: int, line: str, expected: str) -> dict[str, object]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=path, line=lineno,
                        expected=expected) from exc
    except RecursionError as exc:  # "[[[[..." deeper than the interpreter's stack
        raise DataError("JSON nested too deeply", path=path, line=lineno, expected=expected) from exc
    except ValueError as exc:  # an integer of more than 4300 digits (Python's int_max_str_digits)
        raise DataError(f"invalid JSON ({exc})", path=path, line=lineno, expected=expected) from exc
    if not isinstance(obj, dict):
        raise DataError(f"a JSON {type(obj).__name__}, not an object", path=path, line=lineno, expected=expected)
    return obj


def _str_field(obj: Mapping[str, object], key: str, path: Path, lineno: int, expected: str, *,
               required: bool = True) -> str:
    if key not in obj:
        if required:
            raise DataError(f'missing field "{key}"', path=path, line=lineno, expected=expected)
        return ""
    value = obj[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f'field "{key}" is {type(value).__name__}, not a string', path=path, line=lineno,
                        expected=expected)
    return no_surrogates(value, f'field "{key}"', path, lineno)


def no_surrogates(value: str, what: str, path: str | os.PathLike[str], lineno: int) -> str:
    """``value``, unless JSON's ``\\ud800`` escapes smuggled in a lone surrogate: not Unicode text, and
    no UTF-8 writer, tokenizer or C library downstream can take it (a :class:`DataError` here instead)."""
    bad = _SURROGATE.search(value)
    if bad:
        raise DataError(f"{what} holds a lone surrogate {bad.group()!r} (an unpaired \\u escape)", path=path,
                        line=lineno, expected="valid Unicode text")
    return value


def iter_corpus(path: str | os.PathLike[str]) -> Iterator[Document]:
    """Stream documents; suitable for corpora that do not fit in memory."""
    path = Path(path)
    seen: set[str] = set()
    jsonl = _is_jsonl(path)
    for lineno, line in iter_lines(path):
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
    docs = {doc.doc_id: doc for doc in iter_corpus(path)}
    if not docs:
        raise DataError("no documents", path=path, expected=_CORPUS_SHAPE)
    return docs


def read_queries(path: str | os.PathLike[str]) -> dict[str, Query]:
    path = Path(path)
    jsonl = _is_jsonl(path)
    out: dict[str, Query] = {}
    for lineno, line in iter_lines(path):
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
    if not out:
        raise DataError("no queries", path=path, expected=_QUERY_SHAPE)
    return out


def _parse_int(value: str, what: str, path: Path, lineno: int, expected: str) -> int:
    number = parse_ascii_float(value)  # as trec_eval reads it: ASCII digits ("１" or "1_0" are not numbers)
    if number is None:
        raise DataError(f"{what} {value!r} is not a number", path=path, line=lineno, expected=expected)
    if not number.is_integer():
        raise DataError(f"{what} {value!r} is not an integer", path=path, line=lineno, expected=expected)
    if not _INT32[0] <= number <= _INT32[1]:
        raise DataError(f"{what} {value!r} does not fit a 32-bit integer (trec_eval's range)",
                        path=path, line=lineno, expected=expected)
    return int(number)


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read TREC or BEIR-TSV qrels into ``{qid: {doc_id: rel}}``.

    A (qid, doc_id) pair judged twice with the same grade is kept once (one warning per file); with
    different grades it is an error naming both lines, since either choice would change the metrics.
    """
    path = Path(path)
    out: Qrels = {}
    line_of: dict[tuple[str, str], int] = {}
    n_repeats = 0
    first = True
    for lineno, line in iter_lines(path):
        if "\t" in line:
            parts = [p.strip() for p in line.split("\t")]
        else:
            parts = line.split()
        if first:
            first = False
            # BEIR's header; a TREC line whose query is called "qid" ends in a grade, not in a column name
            if parts[0].lower() in {"query-id", "query_id", "qid"} and parse_ascii_float(parts[-1]) is None:
                continue
        if len(parts) == 4:
            qid, _, doc_id, rel_s = parts
        elif len(parts) == 3:
            qid, doc_id, rel_s = parts
        else:
            raise DataError(f"{len(parts)} columns", path=path, line=lineno, expected=_QRELS_SHAPE)
        if not qid or not doc_id:
            raise DataError(f"empty {'query' if not qid else 'document'} id", path=path, line=lineno,
                            expected=_QRELS_SHAPE)
        rel = _parse_int(rel_s, "relevance", path, lineno, _QRELS_SHAPE)
        docs = out.setdefault(qid, {})
        if doc_id in docs:
            earlier = line_of[qid, doc_id]
            if docs[doc_id] != rel:
                raise DataError(f"query {qid!r} judges document {doc_id!r} {rel}, but line {earlier} judged it "
                                f"{docs[doc_id]}", path=path, line=lineno, expected="one grade per (qid, docid)")
            n_repeats += 1
            if n_repeats == 1:
                logger.warning("%s:%d: repeats the judgment of line %d (same grade); duplicates are kept once",
                               path, lineno, earlier)
            continue
        docs[doc_id] = rel
        line_of[qid, doc_id] = lineno
    if n_repeats > 1:
        logger.warning("%s: %d repeated identical judgments in all, each kept once", path, n_repeats)
    if not out:
        raise DataError("no judgments", path=path, expected=_QRELS_SHAPE)
    return out


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run into ``{qid: {doc_id: score}}``."""
    path = Path(path)
    out: Run = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{len(parts)} columns", path=path, line=lineno, expected=_RUN_SHAPE)
        qid, _, doc_id, rank_s, score_s, _ = parts
        _parse_int(rank_s, "rank", path, lineno, _RUN_SHAPE)
        score = parse_ascii_float(score_s)
        if score is None:
            raise DataError(f"score {score_s!r} is not a number", path=path, line=lineno, expected=_RUN_SHAPE)
        if not math.isfinite(score):
            raise DataError(f"score {score_s!r} is not finite", path=path, line=lineno, expected=_RUN_SHAPE)
        docs = out.setdefault(qid, {})
        if doc_id in docs:
            raise DataError(f"document {doc_id!r} listed twice for query {qid!r}", path=path, line=lineno,
                            expected="one line per (qid, docid)")
        docs[doc_id] = score
    if not out:
        raise DataError("empty run", path=path, expected=_RUN_SHAPE)
    return out


def check_id(value: object, what: str, path: str | os.PathLike[str] | None = None, context: str = "") -> str:
    """``value`` if it can be written as an id in every distilrank format, else a :class:`DataError` naming it.

    The one id rule of the writers: non-empty, no whitespace, no control characters, valid UTF-8. Readers
    are lenient (a BEIR corpus may hold ``"a b"``); an id that breaks this rule fails where it is written.
    ``context`` follows the id in the message (``" (query '1')"``).
    """
    if not isinstance(value, str) or not value:
        raise DataError(f"{what} {value!r}{context} is not a non-empty string", path=path)
    bad = _BAD_ID_CHAR.search(value)
    if bad:
        raise DataError(f"{what} {value!r}{context} contains {bad.group()!r} at position {bad.start()}: ids cannot "
                        "hold whitespace or control characters, which would shift the columns of a TREC line",
                        path=path)
    return value


def write_run(path: str | os.PathLike[str], run: Mapping[str, Mapping[str, float]], tag: str = "distilrank",
              top_k: int | None = None) -> Path:
    """Write a TREC run atomically, each query's docs sorted by score (ties by doc id).

    Every id and the tag pass :func:`check_id`, and every score is finite, so the file reads back as the
    same run, in the same order; otherwise a :class:`DataError` names the id and nothing is written.
    """
    path = Path(path)
    check_id(tag, "run tag", path)
    checked: set[str] = set()
    with open_text(path, "w") as fh:
        for qid, docs in run.items():
            check_id(qid, "query id", path)
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            if top_k is not None:
                ranked = ranked[:top_k]
            texts = _score_texts(qid, ranked, path)
            for rank, ((doc_id, _), score) in enumerate(zip(ranked, texts, strict=True), start=1):
                if doc_id not in checked:
                    checked.add(check_id(doc_id, "document id", path, f" (query {qid!r})"))
                fh.write(f"{qid} Q0 {doc_id} {rank} {score} {tag}\n")
    return path


def _score_texts(qid: str, ranked: list[tuple[str, float]], path: Path) -> list[str]:
    """A query's scores as written: 6 decimals, or every digit (``repr``) when 6 decimals would tie two
    different scores -- evaluation re-sorts by score, so a tie the ranking did not have changes the metrics."""
    for doc_id, score in ranked:
        if not math.isfinite(score):
            raise DataError(f"score {score!r} of document {doc_id!r} for query {qid!r} is not finite", path=path)
    texts = [f"{float(score):.6f}" for _, score in ranked]
    pairs = zip(texts, texts[1:], ranked, ranked[1:], strict=False)  # each with its successor
    if any(float(a) == float(b) and x[1] != y[1] for a, b, x, y in pairs):
        return [repr(float(score)) for _, score in ranked]
    return texts


def write_queries(path: str | os.PathLike[str], queries: Iterable[Query]) -> Path:
    """Queries as TSV (whitespace in the text collapsed), compressed by suffix, written atomically."""
    with open_text(path, "w") as fh:
        for q in queries:
            text = " ".join(q.text.split())
            fh.write(f"{check_id(q.qid, 'query id', path)}\t{text}\n")
    return Path(path)


def write_qrels(path: str | os.PathLike[str], qrels: Mapping[str, Mapping[str, int]]) -> Path:
    """TREC qrels, compressed by suffix, written atomically; ids pass :func:`check_id`, grades fit a C int."""
    with open_text(path, "w") as fh:
        for qid, docs in qrels.items():
            check_id(qid, "query id", path)
            for doc_id, rel in docs.items():
                check_id(doc_id, "document id", path, f" (query {qid!r})")
                if isinstance(rel, bool) or not isinstance(rel, numbers.Integral) or not _INT32[0] <= rel <= _INT32[1]:
                    raise DataError(f"relevance {rel!r} of document {doc_id!r} for query {qid!r} is not a "
                                    "32-bit integer (trec_eval's range)", path=path)
                fh.write(f"{qid} 0 {doc_id} {int(rel)}\n")
    return Path(path)


def write_corpus(path: str | os.PathLike[str], docs: Iterable[Document]) -> Path:
    """BEIR JSONL, or MS MARCO TSV (``id<TAB>title<TAB>text``) when the suffix is ``.tsv``; compressed by suffix.

    Ids pass :func:`check_id`; in TSV, whitespace runs in title and text become one space.
    """
    tsv = text_suffix(path) == ".tsv"
    with open_text(path, "w") as fh:
        for d in docs:
            check_id(d.doc_id, "document id", path)
            if tsv:
                fh.write("\t".join(" ".join(x.split()) for x in (d.doc_id, d.title, d.text)) + "\n")
            else:
                fh.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}, ensure_ascii=False) + "\n")
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
