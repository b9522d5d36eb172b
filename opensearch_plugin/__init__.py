"""OpenSearch integration: the ``distilrank`` rescorer plugin (Java, ``java/``) and its Python tooling.

The pipeline's entry points for OpenSearch as the first stage: :func:`ensure_index` (build or reuse an index of
a corpus) and :func:`retrieve_run` (a run with the engine's scores); client-side rescoring with the plugin's
exact semantics: :func:`rescore_hits` over a :class:`RankerPool`.
"""

from __future__ import annotations

from ._build import build_plugin
from ._first_stage import MAX_TOP_K, IndexInfo, ensure_index, index_exists, retrieve_run, retrieve_to_file
from ._index import (
    DEFAULT_ANALYZER,
    INDEX_BODY,
    bulk_load,
    client,
    create_index,
    index_body,
    load_corpus,
    run_queries,
    shard_count,
    shard_hits,
)
from ._model_defaults import ModelDefaults, ServedScores, model_defaults, to_convention
from ._node import (
    OPENSEARCH_VERSION,
    NodeConfig,
    distilrank_home,
    find_java_home,
    install,
    install_analysis_common,
    start,
    status,
    stop,
)
from ._ranker_pool import RankerError, RankerPool
from ._rescore import (
    QUERY_RESCORER_MODES,
    SCORE_MODES,
    RescoreParams,
    blend_floor,
    blend_window,
    combine,
    document_text,
    ranker_score_fn,
    rescore_clause,
    rescore_hits,
    search_body,
)

__all__ = [
    "DEFAULT_ANALYZER",
    "INDEX_BODY",
    "MAX_TOP_K",
    "OPENSEARCH_VERSION",
    "QUERY_RESCORER_MODES",
    "SCORE_MODES",
    "IndexInfo",
    "ModelDefaults",
    "NodeConfig",
    "RankerError",
    "RankerPool",
    "RescoreParams",
    "ServedScores",
    "blend_floor",
    "blend_window",
    "build_plugin",
    "bulk_load",
    "client",
    "combine",
    "create_index",
    "distilrank_home",
    "document_text",
    "ensure_index",
    "index_exists",
    "find_java_home",
    "index_body",
    "install",
    "install_analysis_common",
    "load_corpus",
    "model_defaults",
    "ranker_score_fn",
    "rescore_clause",
    "rescore_hits",
    "retrieve_run",
    "retrieve_to_file",
    "run_queries",
    "search_body",
    "shard_count",
    "shard_hits",
    "start",
    "status",
    "stop",
    "to_convention",
]
