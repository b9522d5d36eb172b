"""OpenSearch as the first stage: build (or reuse) an index of a corpus and retrieve TREC runs from it.

What the pipeline calls when the engine that will serve is also the first stage:

* :func:`ensure_index` builds the index of a corpus once and reuses it while the corpus file, the analyzer,
  the BM25 parameters and the shard count are unchanged (they are recorded in the index's ``_meta``);
* :func:`retrieve_run` searches every query and returns the run with the engine's float32 scores exactly;
* :func:`retrieve_to_file` writes that run as TREC (``distilrank retrieve opensearch``).

Errors: an unreachable node or a missing index is a MissingPrerequisiteError (exit 3) naming the URL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.core.atomic_io import sha256_file
from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.formats import Query, Run, read_queries, write_run

from ._index import DEFAULT_ANALYZER, DEFAULT_B, DEFAULT_K1, bulk_load, client, create_index
from ._rescore import search_body

__all__ = ["MAX_TOP_K", "IndexInfo", "ensure_index", "retrieve_run", "retrieve_to_file"]

logger = logging.getLogger(__name__)

#: OpenSearch's default ``index.max_result_window``: deeper pages need a scroll, which a first stage never needs
MAX_TOP_K = 10_000


@dataclass(frozen=True)
class IndexInfo:
    """An index built from one corpus: what it holds and whether :func:`ensure_index` reused it."""

    url: str
    index: str
    documents: int
    meta: Mapping[str, object]
    reused: bool


def _connect(url: str, timeout: float = 30.0):
    """A client for ``url`` that has answered once; MissingPrerequisiteError (exit 3) naming the URL if not."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import TransportError

    os_client = client(url, timeout=timeout)
    try:
        os_client.info()
    except (OSConnectionError, TransportError) as exc:
        raise MissingPrerequisiteError(f"OpenSearch at {url} is unreachable ({type(exc).__name__}: {exc}); start a "
                                       "node (distilrank opensearch start) or check --url") from exc
    return os_client


def index_exists(url: str, index: str) -> bool:
    """Whether ``index`` exists at ``url`` (exit 3 naming the URL when the node does not answer)."""
    return bool(_connect(url).indices.exists(index=index))


def _stored_meta(os_client, index: str) -> dict[str, object] | None:
    mapping = os_client.indices.get_mapping(index=index)
    meta = next(iter(mapping.values()))["mappings"].get("_meta") or {}
    found = meta.get("distilrank")
    return dict(found) if isinstance(found, Mapping) else None


def ensure_index(url: str, index: str, corpus: str | os.PathLike[str], *, analyzer: str = DEFAULT_ANALYZER,
                 shards: int = 1, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> IndexInfo:
    """Build ``index`` at ``url`` from ``corpus`` (BEIR JSONL or TSV), or reuse it when it was built by
    distilrank from the same corpus file (sha256) with the same analyzer, BM25 parameters and shards.

    An index built from something else by distilrank is rebuilt; an index distilrank did not build is never
    touched (ConfigError: choose another name).
    """
    from distill.core.formats import iter_corpus

    path = Path(corpus)
    if not path.is_file():
        raise MissingPrerequisiteError(f"corpus {path} not found")
    meta = {"corpus_sha256": sha256_file(path), "corpus": path.name, "analyzer": analyzer, "k1": k1, "b": b,
            "shards": shards}
    os_client = _connect(url)
    if os_client.indices.exists(index=index):
        stored = _stored_meta(os_client, index)
        if stored is None:
            raise ConfigError(f"index {index!r} at {url} exists and was not built by distilrank; choose another "
                              "--index (distilrank never deletes an index it did not build)")
        if {k: stored.get(k) for k in meta} == meta:
            count = int(os_client.count(index=index)["count"])
            logger.info("reusing index %s at %s (%d documents)", index, url, count)
            return IndexInfo(url, index, count, stored, reused=True)
        logger.info("rebuilding index %s at %s: it was built with %s, now %s", index, url, stored, meta)
    create_index(os_client, index, shards=shards, recreate=True, analyzer=analyzer, k1=k1, b=b, meta=meta)
    count = bulk_load(os_client, index, iter_corpus(path))
    return IndexInfo(url, index, count, meta, reused=False)


def retrieve_run(url: str, index: str, queries: Mapping[str, Query] | Sequence[Query], top_k: int = 100, *,
                 fields: Sequence[str] = ("title", "text")) -> Run:
    """The engine's first stage (``multi_match`` most_fields BM25 over ``fields``, the query the rescorer runs
    behind): ``{qid: {doc_id: score}}`` with the engine's float32 scores exactly (as Python floats)."""
    from opensearchpy.exceptions import NotFoundError

    if not 1 <= top_k <= MAX_TOP_K:
        raise ConfigError(f"top_k must be in 1..{MAX_TOP_K} (OpenSearch's max_result_window), got {top_k}")
    qs = list(queries.values()) if isinstance(queries, Mapping) else list(queries)
    os_client = _connect(url)
    if not os_client.indices.exists(index=index):
        raise MissingPrerequisiteError(f"index {index!r} not found at {url}; build it with `distilrank opensearch "
                                       "index --corpus C --index I` or pass --corpus")
    run: Run = {}
    try:
        for q in qs:
            hits = os_client.search(index=index, body=search_body(q.text, top_k, None, fields))["hits"]["hits"]
            run[q.qid] = {str(h["_id"]): float(np.float32(h["_score"])) for h in hits}
    except NotFoundError as exc:
        raise MissingPrerequisiteError(f"index {index!r} disappeared from {url} during retrieval") from exc
    logger.info("retrieved %d queries from %s/%s", len(run), url, index)
    return run


def retrieve_to_file(url: str, index: str, queries: str | os.PathLike[str], top_k: int, out: str | os.PathLike[str],
                     *, corpus: str | os.PathLike[str] | None = None, analyzer: str = DEFAULT_ANALYZER,
                     shards: int = 1, fields: Sequence[str] = ("title", "text"), tag: str = "opensearch") -> Path:
    """``distilrank retrieve opensearch``: (build or reuse the index from ``corpus``, then) retrieve every query
    and write the TREC run atomically. Returns its path."""
    qs = read_queries(queries)
    if corpus is not None:
        ensure_index(url, index, corpus, analyzer=analyzer, shards=shards)
    run = retrieve_run(url, index, qs, top_k, fields=fields)
    return write_run(out, run, tag=tag)
