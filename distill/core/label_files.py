"""Teacher-label files: the contract between ``distilrank teacher label`` and student training.

One JSON object per line::

    {"qid": "q1", "query": "text of the query",
     "docs": [{"doc_id": "d7", "score": 3.21, "source": "bm25"}, ...]}

* ``score`` is the teacher's **raw logit** for (query, doc) -- not a probability, not normalised;
  normalisation for distillation is the student's config.
* ``source`` names where the candidate came from: ``bm25``, ``dense``, ``random``,
  ``positive`` (a judged relevant doc), or several joined with ``+`` after de-duplication.
* docs are unique per query; their order carries no meaning.

Files are appended one query at a time (flushed), so a crashed labelling run resumes from the
qids already present; a torn last line from a crash is ignored on resume with a warning.
A path ending in ``.gz`` or ``.bz2`` is read and appended compressed (one member per query), through
:func:`distill.core.formats.open_text` like every other data file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.core.formats import compression_of, iter_lines, open_text
from distill.core.errors import DataError

__all__ = ["LabeledDoc", "LabeledQuery", "append_labels", "iter_labels", "read_labels", "valid_qids"]

logger = logging.getLogger(__name__)

_SHAPE = '{"qid": str, "query": str, "docs": [{"doc_id": str, "score": float, "source": str}, ...]}'


@dataclass(frozen=True, slots=True)
class LabeledDoc:
    doc_id: str
    score: float
    source: str


@dataclass(frozen=True, slots=True)
class LabeledQuery:
    qid: str
    query: str
    docs: tuple[LabeledDoc, ...]

    def to_json(self) -> str:
        obj = {"qid": self.qid, "query": self.query, "docs": [asdict(d) for d in self.docs]}
        return json.dumps(obj, ensure_ascii=False)


def _parse(path: Path, lineno: int, line: str) -> LabeledQuery:
    try:
        obj = json.loads(line)
        qid, query, docs = obj["qid"], obj["query"], obj["docs"]
        if not isinstance(qid, str) or not isinstance(query, str) or not isinstance(docs, list):
            raise TypeError("qid/query must be strings and docs a list")
        parsed = []
        seen: set[str] = set()
        for d in docs:
            doc = LabeledDoc(str(d["doc_id"]), float(d["score"]), str(d.get("source", "unknown")))
            if not math.isfinite(doc.score):
                raise ValueError(f"score of doc {doc.doc_id!r} is not finite")
            if doc.doc_id in seen:
                raise ValueError(f"doc {doc.doc_id!r} appears twice")
            seen.add(doc.doc_id)
            parsed.append(doc)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"bad label record: {exc}", path=path, line=lineno, expected=_SHAPE) from exc
    return LabeledQuery(qid, query, tuple(parsed))


def iter_labels(path: str | os.PathLike[str]) -> Iterator[LabeledQuery]:
    path = Path(path)
    if not path.exists():
        raise DataError("label file not found", path=path)
    for lineno, line in iter_lines(path):
        yield _parse(path, lineno, line)


def read_labels(path: str | os.PathLike[str]) -> list[LabeledQuery]:
    return list(iter_labels(path))


def valid_qids(path: str | os.PathLike[str]) -> set[str]:
    """Qids already labelled; truncates a torn final line left by a crash so appends stay valid."""
    path = Path(path)
    if not path.exists():
        return set()
    if compression_of(path):
        return _valid_qids_compressed(path)
    done: set[str] = set()
    good_bytes = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                logger.warning("%s:%d: dropping an incomplete last line (interrupted run)", path, lineno)
                break
            if raw.strip():
                done.add(_parse(path, lineno, raw.decode("utf-8")).qid)
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def _valid_qids_compressed(path: Path) -> set[str]:
    """:func:`valid_qids` for a compressed file: a crash leaves a torn member, which cannot be cut
    off in place, so the complete lines are rewritten (atomically) when the tail is torn."""
    good: list[str] = []
    torn = False
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.endswith("\n"):
                    torn = True
                    break
                if line.strip():
                    _parse(path, lineno, line)
                good.append(line)
    except (EOFError, OSError, zlib.error) as exc:  # the stream itself ends mid-member
        torn = True
        logger.debug("%s: compressed stream ends early: %s", path, exc)
    if torn:
        logger.warning("%s:%d: dropping an incomplete last record (interrupted run)", path, len(good) + 1)
        with open_text(path, "w") as out:
            out.writelines(good)
    return {json.loads(line)["qid"] for line in good if line.strip()}


def append_labels(path: str | os.PathLike[str], record: LabeledQuery) -> None:
    """Append one query's labels as a single line, flushed and fsynced (the resume unit)."""
    with open_text(path, "a") as fh:
        fh.write(record.to_json() + "\n")
