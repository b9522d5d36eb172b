"""OpenSearch integration: the ``distilrank`` rescorer plugin (Java, ``java/``) and its Python tooling."""

from __future__ import annotations

from ._build import build_plugin
from ._index import INDEX_BODY, bulk_load, client, create_index, load_corpus, run_queries
from ._node import (
    OPENSEARCH_VERSION,
    NodeConfig,
    distilrank_home,
    find_java_home,
    install,
    start,
    status,
    stop,
)
from ._rescore import (
    SCORE_MODES,
    RescoreParams,
    combine,
    document_text,
    ranker_score_fn,
    rescore_clause,
    rescore_hits,
    search_body,
)

__all__ = [
    "INDEX_BODY",
    "OPENSEARCH_VERSION",
    "SCORE_MODES",
    "NodeConfig",
    "RescoreParams",
    "build_plugin",
    "bulk_load",
    "client",
    "combine",
    "create_index",
    "distilrank_home",
    "document_text",
    "find_java_home",
    "install",
    "load_corpus",
    "ranker_score_fn",
    "rescore_clause",
    "rescore_hits",
    "run_queries",
    "search_body",
    "start",
    "status",
    "stop",
]
