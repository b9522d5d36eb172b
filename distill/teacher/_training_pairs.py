"""Training pairs for the teacher stages, read and validated at the boundary."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import DataError
from distill.core.formats import Document, Qrels, Query

_PAIR_SHAPE = '{"query": str, "title": str, "text": str} per line'


@dataclass(frozen=True, slots=True)
class QueryDocPair:
    query: str
    title: str
    text: str


def read_pairs_jsonl(path: str | Path) -> list[QueryDocPair]:
    """Weak-supervision pairs (a click log's shape): ``query``, ``title`` (optional), ``text``."""
    path = Path(path)
    if not path.exists():
        raise DataError("pairs file not found", path=path)
    out: list[QueryDocPair] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg})", path=path, line=lineno, expected=_PAIR_SHAPE) from exc
            if not isinstance(obj, dict):
                raise DataError("not a JSON object", path=path, line=lineno, expected=_PAIR_SHAPE)
            for key in ("query", "text"):
                if not isinstance(obj.get(key), str) or not obj[key].strip():
                    raise DataError(f'field "{key}" missing or empty', path=path, line=lineno, expected=_PAIR_SHAPE)
            title = obj.get("title", "")
            if not isinstance(title, str):
                raise DataError('field "title" is not a string', path=path, line=lineno, expected=_PAIR_SHAPE)
            out.append(QueryDocPair(obj["query"].strip(), title.strip(), obj["text"].strip()))
    if not out:
        raise DataError("no pairs", path=path, expected=_PAIR_SHAPE)
    return out


def pairs_from_qrels(queries: dict[str, Query], qrels: Qrels, corpus: dict[str, Document]) -> list[QueryDocPair]:
    """Every judged-relevant (query, document) pair whose ids are known, in qrels order."""
    out: list[QueryDocPair] = []
    missing = 0
    for qid, docs in qrels.items():
        for doc_id, rel in docs.items():
            if rel <= 0:
                continue
            if qid not in queries or doc_id not in corpus:
                missing += 1
                continue
            doc = corpus[doc_id]
            out.append(QueryDocPair(queries[qid].text, doc.title, doc.text))
    if not out:
        raise DataError(f"no relevant (query, document) pair with known ids in the qrels ({missing} unknown ids)")
    return out


def subsample(items: list, n: int, seed: int) -> list:
    if n <= 0 or n >= len(items):
        return items
    rng = random.Random(seed)
    return [items[i] for i in sorted(rng.sample(range(len(items)), n))]
