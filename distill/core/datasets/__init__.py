"""Bundled datasets: the one accessor for the files shipped inside the package.

``scifact_mini``: 2,239 SciFact abstracts with 120 train and 60 test queries (see its SOURCE.txt),
used by ``make demo``, the tests and the benchmarks so that a fresh clone works without ``../shared``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BundledDataset", "bundled_dataset"]

_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BundledDataset:
    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def train_queries(self) -> Path:
        return self.root / "queries.train.tsv"

    @property
    def train_qrels(self) -> Path:
        return self.root / "qrels.train.txt"

    @property
    def test_queries(self) -> Path:
        return self.root / "queries.test.tsv"

    @property
    def test_qrels(self) -> Path:
        return self.root / "qrels.test.txt"


def bundled_dataset(name: str = "scifact_mini") -> BundledDataset:
    root = _ROOT / name
    if not (root / "corpus.jsonl").is_file():
        from distill.core.errors import MissingPrerequisiteError

        raise MissingPrerequisiteError(f"bundled dataset {name!r} not found under {_ROOT}; reinstall distilrank")
    return BundledDataset(root)
