"""Index BEIR-style corpora and run query sets against OpenSearch (opensearch-py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from distill.core.bm25 import BM25Config
from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.formats import Document, Query, Run, iter_corpus
from distill.core.lazy import missing_extra_error

from ._model_defaults import ModelDefaults
from ._rescore import RescoreParams, ScoreFn, rescore_hits, search_body

logger = logging.getLogger(__name__)

#: the analyzer of new indexes: ``english`` (standard tokenizer, possessives, lowercase, English stop words,
#: Porter stemming) from the analysis-common module that ``distilrank opensearch install`` adds; the pipeline's
#: bm25s stems too (Snowball English). ``standard`` works on a node without analysis-common (no stemming).
DEFAULT_ANALYZER = "english"
#: Lucene BM25 with the parameters of the pipeline's bm25s first stage (``BM25Config``), not Lucene's 1.2/0.75
DEFAULT_K1 = BM25Config().k1
DEFAULT_B = BM25Config().b


def index_body(analyzer: str = DEFAULT_ANALYZER, shards: int = 1, k1: float = DEFAULT_K1, b: float = DEFAULT_B,
               meta: Mapping[str, object] | None = None) -> dict[str, object]:
    """Settings and mapping of a distilrank index: title and text BM25-searchable with ``analyzer``, kept in
    _source (which the rescorer reads); ``meta`` is stored in the mapping's ``_meta.distilrank``."""
    if shards < 1:
        raise ConfigError(f"shards must be >= 1, got {shards}")
    mappings: dict[str, object] = {
        "dynamic": "strict",
        "_source": {"enabled": True},
        "properties": {
            "doc_id": {"type": "keyword"},
            "title": {"type": "text", "analyzer": analyzer},
            "text": {"type": "text", "analyzer": analyzer},
        },
    }
    if meta is not None:
        mappings["_meta"] = {"distilrank": dict(meta)}
    return {"settings": {"number_of_shards": shards, "number_of_replicas": 0,
                         "index": {"similarity": {"default": {"type": "BM25", "k1": k1, "b": b}}}},
            "mappings": mappings}


INDEX_BODY: dict[str, object] = index_body()


def client(url: str = "http://127.0.0.1:9200", timeout: float = 30.0):
    try:
        from opensearchpy import OpenSearch
    except ModuleNotFoundError as exc:  # pragma: no cover
        raise missing_extra_error(exc, "opensearch", "the OpenSearch client") or exc from exc
    return OpenSearch(hosts=[url], timeout=timeout, retry_on_timeout=True, max_retries=3)


def create_index(os_client, index: str, *, shards: int = 1, recreate: bool = False, analyzer: str = DEFAULT_ANALYZER,
                 k1: float = DEFAULT_K1, b: float = DEFAULT_B, meta: Mapping[str, object] | None = None) -> str:
    """Create ``index`` with :func:`index_body` (``shards`` primary shards). Returns the index name.

    An analyzer the node lacks (``english`` without analysis-common) raises MissingPrerequisiteError (exit 3).
    """
    from opensearchpy.exceptions import RequestError

    if os_client.indices.exists(index=index):
        if not recreate:
            return index
        os_client.indices.delete(index=index)
    try:
        os_client.indices.create(index=index, body=index_body(analyzer, shards, k1, b, meta))
    except RequestError as exc:
        if "analyzer" in str(exc):
            raise MissingPrerequisiteError(
                f"OpenSearch cannot create index {index!r} with analyzer {analyzer!r} ({exc.error}): the english "
                "analyzer needs the analysis-common module, which `distilrank opensearch install` adds; or choose "
                "--analyzer standard") from exc
        raise
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


def shard_count(os_client, index: str) -> int:
    """Primary shards of ``index``."""
    settings = os_client.indices.get_settings(index=index)
    return int(next(iter(settings.values()))["settings"]["index"]["number_of_shards"])


def shard_hits(os_client, index: str, query_text: str, size: int, fields: Sequence[str] = ("title", "text"),
               shards: int = 1) -> list[dict[str, object]]:
    """First-stage hits as the rescorer sees them: each shard's top ``size`` (``preference=_shards:N``), tagged
    with ``_shard``; one plain search when the index has one shard."""
    body = search_body(query_text, size, None, fields)
    if shards == 1:
        return list(os_client.search(index=index, body=body)["hits"]["hits"])
    hits: list[dict[str, object]] = []
    for n in range(shards):
        for h in os_client.search(index=index, body=body, preference=f"_shards:{n}")["hits"]["hits"]:
            hits.append({**h, "_shard": h.get("_shard") or f"[{h.get('_index', index)}][{n}]"})
    return hits


def run_queries(os_client, index: str, queries: Mapping[str, Query], *, size: int = 100,
                params: RescoreParams | None = None, fields: Sequence[str] = ("title", "text"),
                client_side: ScoreFn | None = None, defaults: ModelDefaults | None = None) -> Run:
    """Search every query; with ``params`` and no ``client_side`` the plugin rescores, with ``client_side``
    (a ranker score function, e.g. a :class:`RankerPool`) the hits are rescored here exactly as the plugin
    does: each shard's window is fetched and rescored on its own (see :func:`rescore_hits`)."""
    run: dict[str, dict[str, float]] = {}
    if client_side is not None and params is not None:
        if defaults is None and params.needs_card and hasattr(client_side, "model_defaults"):
            try:
                defaults = client_side.model_defaults()  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - rescore_hits fails open without a card, as the plugin does
                logger.warning("model defaults unknown: %s", exc)
        depth = max(size, params.window(defaults))
        shards = shard_count(os_client, index)
    for qid, q in queries.items():
        if client_side is not None and params is not None:
            hits = shard_hits(os_client, index, q.text, depth, fields, shards)
            ranked = rescore_hits(hits, q.text, params, client_side, defaults)[:size]
        else:
            resp = os_client.search(index=index, body=search_body(q.text, size, params, fields))
            # OpenSearch's scores are float32; JSON carries their shortest decimal form
            ranked = [(h["_id"], float(np.float32(h["_score"]))) for h in resp["hits"]["hits"]]
        run[qid] = dict(ranked)
    return run
