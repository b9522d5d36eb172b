"""Index BEIR-style corpora and run query sets against OpenSearch (opensearch-py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from distill.core.formats import Document, Query, Run, iter_corpus
from distill.core.errors import MissingPrerequisiteError

from ._rescore import RescoreParams, rescore_hits, search_body

logger = logging.getLogger(__name__)

#: title and text are BM25-searchable and kept in _source, which the rescorer reads. "standard": the
#: integ-test distribution has no analysis-common module (no stemming analysers).
INDEX_BODY: dict[str, object] = {
    "settings": {"number_of_shards": 1, "number_of_replicas": 0},
    "mappings": {
        "dynamic": "strict",
        "_source": {"enabled": True},
        "properties": {
            "doc_id": {"type": "keyword"},
            "title": {"type": "text", "analyzer": "standard"},
            "text": {"type": "text", "analyzer": "standard"},
        },
    },
}


def client(url: str = "http://127.0.0.1:9200", timeout: float = 30.0):
    try:
        from opensearchpy import OpenSearch
    except ImportError as exc:  # pragma: no cover
        raise ImportError("opensearch-py is missing: pip install 'opensearch-py>=2.4'") from exc
    return OpenSearch(hosts=[url], timeout=timeout, retry_on_timeout=True, max_retries=3)


def create_index(os_client, index: str, *, shards: int = 1, recreate: bool = False) -> str:
    """Create ``index`` with :data:`INDEX_BODY` (``shards`` primary shards). Returns the index name."""
    if os_client.indices.exists(index=index):
        if not recreate:
            return index
        os_client.indices.delete(index=index)
    body = {**INDEX_BODY, "settings": {"number_of_shards": shards, "number_of_replicas": 0}}
    os_client.indices.create(index=index, body=body)
    return index


def bulk_load(os_client, index: str, docs: Iterable[Document], *, chunk_size: int = 500, max_retries: int = 5,
              refresh: bool = True) -> int:
    """Stream ``docs`` into ``index`` (streaming_bulk, retries with backoff on 429). Returns the number indexed."""
    from opensearchpy.helpers import streaming_bulk

    actions = ({"_index": index, "_id": d.doc_id, "_source": {"doc_id": d.doc_id, "title": d.title, "text": d.text}}
               for d in docs)
    n = 0
    for ok, _item in streaming_bulk(os_client, actions, chunk_size=chunk_size, max_retries=max_retries,
                                   initial_backoff=0.5, raise_on_error=True):
        n += ok
    if refresh:
        os_client.indices.refresh(index=index)
    logger.info("indexed %d documents into %s", n, index)
    return n


def load_corpus(os_client, index: str, corpus: str | os.PathLike[str], *, recreate: bool = False) -> int:
    path = Path(corpus)
    if not path.exists():
        raise MissingPrerequisiteError(f"corpus {path} not found")
    create_index(os_client, index, recreate=recreate)
    return bulk_load(os_client, index, iter_corpus(path))


def run_queries(os_client, index: str, queries: Mapping[str, Query], *, size: int = 100,
                params: RescoreParams | None = None, fields: Sequence[str] = ("title", "text"),
                client_side: Callable[[str, Sequence[str]], Sequence[float]] | None = None) -> Run:
    """Search every query; with ``params`` and no ``client_side`` the plugin rescores, with ``client_side``
    (a ranker score function) the hits are rescored here with the same semantics."""
    run: dict[str, dict[str, float]] = {}
    for qid, q in queries.items():
        plugin_params = params if client_side is None else None
        resp = os_client.search(index=index, body=search_body(q.text, size, plugin_params, fields))
        hits = resp["hits"]["hits"]
        if client_side is not None and params is not None:
            ranked = rescore_hits(hits, q.text, params, client_side)
        else:
            ranked = [(h["_id"], float(h["_score"])) for h in hits]
        run[qid] = dict(ranked)
    return run
