"""LRU score cache keyed by (model sha256, query, document sha256). Used from the event loop only."""

from __future__ import annotations

import hashlib
from collections import OrderedDict


class ScoreCache:
    def __init__(self, model_sha256: str, capacity: int):
        self.model_sha256 = model_sha256
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def key(self, query: str, doc: str) -> tuple[str, str, str]:
        return (self.model_sha256, query, hashlib.sha256(doc.encode("utf-8")).hexdigest())

    def get(self, key: tuple[str, str, str]) -> float | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple[str, str, str], value: float) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
