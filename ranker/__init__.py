"""The ranker service: ONNX Runtime cross-encoder scoring behind Cohere- and TEI-compatible HTTP APIs.

Imports are lazy so ``import ranker`` (and ``ranker.client`` in load tests) does not pull in
onnxruntime, transformers or FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AsyncRerankClient",
    "BatcherConfig",
    "MicroBatcher",
    "RerankClient",
    "RerankClientError",
    "RerankRequest",
    "RerankResponse",
    "RerankRuntime",
    "RerankService",
    "RetryPolicy",
    "RuntimeConfig",
    "ServerConfig",
    "create_app",
]

_WHERE = {
    "AsyncRerankClient": "ranker.client", "RerankClient": "ranker.client", "RerankClientError": "ranker.client",
    "RetryPolicy": "ranker.client", "BatcherConfig": "ranker.batcher", "MicroBatcher": "ranker.batcher",
    "RerankRequest": "ranker.protocol", "RerankResponse": "ranker.protocol", "RerankRuntime": "ranker.runtime",
    "RerankService": "ranker.service",
    "RuntimeConfig": "ranker.runtime", "ServerConfig": "ranker.config", "create_app": "ranker.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'ranker' has no attribute {name!r}")
