"""Teacher-label files: the contract between ``distilrank teacher label`` and student training.

One JSON object per line::

    {"qid": "q1", "query": "text of the query",
     "docs": [{"doc_id": "d7", "score": 3.21, "source": "bm25"}, ...]}

* ``score`` is the teacher's **raw logit** for (query, doc) -- not a probability, not normalised;
  normalisation for distillation is the student's config.
* ``source`` names where the candidate came from: ``bm25``, ``dense``, ``random``,
  ``positive`` (a judged relevant doc), or several joined with ``+`` after de-duplication.
* docs are unique per query; their order carries no meaning.

The first line records who labelled the file (:class:`LabelsTeacher`)::

    {"labelled_by": {"source": "endpoint", "config": {"endpoint_model": "m", ...}, "paths": {...}}}

so that ``teacher label`` refuses to resume a file with another teacher (exit 2). Readers skip header
lines; files written before the header existed read as before. Shards' files concatenate: a header may
recur, but not with another teacher.

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.core.errors import DataError
from distill.core.formats import (
    MAX_LINE_CHARS,
    bounded_lines,
    compression_of,
    iter_lines,
    open_text,
    stream_errors,
)

__all__ = [
    "HEADER_KEY",
    "LabeledDoc",
    "LabeledQuery",
    "LabelsTeacher",
    "append_labels",
    "iter_labels",
    "read_labels",
    "read_teacher",
    "start_labels",
    "valid_qids",
]

logger = logging.getLogger(__name__)

_SHAPE = '{"qid": str, "query": str, "docs": [{"doc_id": str, "score": float, "source": str}, ...]}'
#: the key of the header line: ``{"labelled_by": {"source": ..., "config": {...}, "paths": {...}}}``
HEADER_KEY = "labelled_by"


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


@dataclass(frozen=True)
class LabelsTeacher:
    """Who labelled a file: the header line that ``teacher label`` writes first, so that a resumed run can
    refuse to mix two teachers in one file.

    ``source`` is the teacher source (``llm``, ``endpoint``, ...); ``config`` the settings that decide the
    scores (JSON values); ``paths`` the path-valued ones, each ``{"path": absolute, "relative": relative to
    the labels file's folder}``. Two path records match when either form matches, so a copied output
    folder still matches its own teacher and a moved one still matches an outside teacher.
    """

    source: str
    config: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {"source": self.source, "config": self.config, "paths": self.paths}
        return json.dumps({HEADER_KEY: body}, ensure_ascii=False, sort_keys=True)

    def describe(self) -> str:
        settings = [f"{k}={v!r}" for k, v in sorted(self.config.items())]
        settings += [f"{k}={v.get('path')!r}" for k, v in sorted(self.paths.items())]
        return f"source {self.source!r}" + (f" ({', '.join(settings)})" if settings else "")

    def differences(self, other: LabelsTeacher, *, paths: bool = True) -> list[str]:
        """``"key: mine vs other's"`` for every setting that differs (paths too, unless ``paths=False``)."""
        out = [f"source: {self.source!r} vs {other.source!r}"] if self.source != other.source else []
        for key in sorted(set(self.config) | set(other.config)):
            mine, theirs = self.config.get(key), other.config.get(key)
            if mine != theirs:
                out.append(f"{key}: {mine!r} vs {theirs!r}")
        for key in sorted(set(self.paths) | set(other.paths)) if paths else ():
            mine, theirs = self.paths.get(key) or {}, other.paths.get(key) or {}
            if not any(mine.get(form) is not None and mine.get(form) == theirs.get(form)
                       for form in ("path", "relative")) and (mine or theirs):
                out.append(f"{key}: {mine.get('path')!r} vs {theirs.get('path')!r}")
        return out


def _header(path: Path, lineno: int, body: object) -> LabelsTeacher:
    shape = f'{{"{HEADER_KEY}": {{"source": str, "config": {{...}}, "paths": {{...}}}}}}'
    if not isinstance(body, dict) or not isinstance(body.get("source"), str):
        raise DataError("bad header line", path=path, line=lineno, expected=shape)
    config, paths = body.get("config", {}), body.get("paths", {})
    if not isinstance(config, dict) or not isinstance(paths, dict) or not all(
            isinstance(v, dict) and all(isinstance(x, str) for x in v.values()) for v in paths.values()):
        raise DataError("bad header line: config and paths must be objects", path=path, line=lineno, expected=shape)
    return LabelsTeacher(body["source"], config, paths)


def _text(value: object, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # BEIR ids may be JSON numbers
    if not isinstance(value, str):
        raise TypeError(f"{what} is {type(value).__name__}, not a string")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError(f"{what} holds a lone surrogate (an unpaired \\u escape)")
    return value


def _doc(d: object, seen: set[str]) -> LabeledDoc:
    if not isinstance(d, dict):
        raise TypeError(f"a doc is {type(d).__name__}, not an object")
    score = d["score"]
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise TypeError(f"score is {type(score).__name__}, not a number")
    doc = LabeledDoc(_text(d["doc_id"], "doc_id"), float(score), _text(d.get("source", "unknown"), "source"))
    if not math.isfinite(doc.score):
        raise ValueError(f"score of doc {doc.doc_id!r} is not finite")
    if doc.doc_id in seen:
        raise ValueError(f"doc {doc.doc_id!r} appears twice")
    seen.add(doc.doc_id)
    return doc


def _parse(path: Path, lineno: int, line: str) -> LabeledQuery | LabelsTeacher:
    """One line: a query's labels, or the header (:class:`LabelsTeacher`)."""
    try:
        obj = json.loads(line)
        if isinstance(obj, dict) and HEADER_KEY in obj and "qid" not in obj:
            return _header(path, lineno, obj[HEADER_KEY])
        if not isinstance(obj, dict):
            raise TypeError(f"a JSON {type(obj).__name__}, not an object")
        docs = obj["docs"]
        if not isinstance(docs, list):
            raise TypeError("docs must be a list")
        seen: set[str] = set()
        parsed = tuple(_doc(d, seen) for d in docs)
        return LabeledQuery(_text(obj["qid"], "qid"), _text(obj["query"], "query"), parsed)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        raise DataError(f"bad label record: {detail}", path=path, line=lineno, expected=_SHAPE) from exc


def iter_labels(path: str | os.PathLike[str]) -> Iterator[LabeledQuery]:
    """The labelled queries of a file, header lines skipped.

    Shards' files concatenate, so a header may recur; one that names another source or other settings
    than the first (paths aside: shards may run on different machines) is a :class:`DataError`, since
    the file would mix two teachers.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("label file not found", path=path)
    first: tuple[int, LabelsTeacher] | None = None
    for lineno, line in iter_lines(path):
        item = _parse(path, lineno, line)
        if isinstance(item, LabeledQuery):
            yield item
        elif first is None:
            first = lineno, item
        elif diff := first[1].differences(item, paths=False):
            raise DataError(f"labels of another teacher begin here ({'; '.join(diff)}, line {first[0]} vs this "
                            "line); one file must hold one teacher's labels", path=path, line=lineno)


def read_labels(path: str | os.PathLike[str]) -> list[LabeledQuery]:
    return list(iter_labels(path))


def read_teacher(path: str | os.PathLike[str]) -> LabelsTeacher | None:
    """The teacher a labels file records in its first line; None for a missing or empty file, or one
    written before files recorded their teacher."""
    path = Path(path)
    if not path.exists():
        return None
    for lineno, line in iter_lines(path):
        item = _parse(path, lineno, line)
        return item if isinstance(item, LabelsTeacher) else None
    return None


def start_labels(path: str | os.PathLike[str], teacher: LabelsTeacher) -> None:
    """Begin an empty (or missing) labels file with its header line, fsynced like every record."""
    with open_text(path, "a") as fh:
        fh.write(teacher.to_json() + "\n")


def valid_qids(path: str | os.PathLike[str]) -> set[str]:
    """Qids already labelled; truncates a torn final line left by a crash so appends stay valid."""
    path = Path(path)
    if not path.exists():
        return set()
    if compression_of(path):
        return _valid_qids_compressed(path)
    done: set[str] = set()
    good_bytes = 0
    limit = 4 * MAX_LINE_CHARS  # bytes: a line iter_lines accepts is at most 4 UTF-8 bytes a character
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(bounded_lines(fh, path, limit, expected="one JSON record per line"), start=1):
            if not raw.endswith(b"\n"):
                logger.warning("%s:%d: dropping an incomplete last line (interrupted run)", path, lineno)
                break
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 ({exc.reason})", path=path, line=lineno) from exc
            item = _parse(path, lineno, line) if line.strip() else None
            if isinstance(item, LabeledQuery):
                done.add(item.qid)
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def _valid_qids_compressed(path: Path) -> set[str]:
    """:func:`valid_qids` for a compressed file: a crash leaves a torn member, which cannot be cut
    off in place, so the complete lines are rewritten (atomically) when the tail is torn."""
    good: list[str] = []
    done: set[str] = set()
    torn = False
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(bounded_lines(fh, path), start=1):
                if not line.endswith("\n"):
                    torn = True
                    break
                item = _parse(path, lineno, line) if line.strip() else None
                if isinstance(item, LabeledQuery):
                    done.add(item.qid)
                good.append(line)
    except stream_errors() as exc:  # the stream itself ends mid-member
        torn = True
        logger.debug("%s: compressed stream ends early: %s", path, exc)
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 ({exc.reason}) after line {len(good)}", path=path) from exc
    if torn:
        logger.warning("%s:%d: dropping an incomplete last record (interrupted run)", path, len(good) + 1)
        with open_text(path, "w") as out:
            out.writelines(good)
    return done


def append_labels(path: str | os.PathLike[str], record: LabeledQuery) -> None:
    """Append one query's labels as a single line, flushed and fsynced (the resume unit)."""
    with open_text(path, "a") as fh:
        fh.write(record.to_json() + "\n")
