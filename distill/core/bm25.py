"""In-process BM25 first stage (bm25s), for users without a search engine.

Defaults mirror Anserini's BEIR baselines (Lucene BM25, k1=0.9, b=0.4, English stop words,
Snowball/Porter stemming via PyStemmer) over ``title + text``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distill.core.errors import ConfigError, DataError, MissingPrerequisiteError
from distill.core.formats import Document, Query, Run
from distill.core.params import finite_float

__all__ = ["B_RANGE", "K1_RANGE", "BM25Config", "BM25Index"]

logger = logging.getLogger(__name__)


#: k1 saturates term frequency. Lucene takes any finite k1 >= 0, but scores fall as 1/k1: beyond 100 they
#: vanish below the 6 decimals of a TREC run (ties), and past ~1e300 to 0, which drops every hit.
K1_RANGE = (0.0, 100.0)
#: b is the share of document-length normalisation
B_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class BM25Config:
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        # nan passes every comparison; finite_float refuses it (a BM25 of nan scores every document 0)
        object.__setattr__(self, "k1", finite_float("BM25 k1", self.k1, *K1_RANGE))
        object.__setattr__(self, "b", finite_float("BM25 b", self.b, *B_RANGE))


class BM25Index:
    """A BM25 index over a corpus; ``search`` returns a TREC-style run."""

    def __init__(self, corpus: Mapping[str, Document], config: BM25Config | None = None, show_progress: bool = False):
        import bm25s

        self.config = config or BM25Config()
        self._doc_ids = list(corpus)
        if not self._doc_ids:
            raise DataError("cannot index an empty corpus")
        self._stemmer = None
        if self.config.stemmer:
            try:
                import Stemmer
            except ImportError as exc:
                raise MissingPrerequisiteError("stemming needs PyStemmer: pip install PyStemmer") from exc
            self._stemmer = Stemmer.Stemmer(self.config.stemmer)
        tokens = bm25s.tokenize([corpus[d].full_text for d in self._doc_ids], stopwords=self.config.stopwords,
                                stemmer=self._stemmer, show_progress=show_progress)
        if not tokens.vocab:
            raise DataError(f"no indexable terms in {len(self._doc_ids)} documents: every word is a stop word "
                            f"({self.config.stopwords!r} list) or not a word "
                            "(bm25s keeps tokens of 2+ word characters)")
        self._retriever = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._retriever.index(tokens, show_progress=show_progress)

    def search(self, queries: Mapping[str, Query], top_k: int = 100, show_progress: bool = False) -> Run:
        import bm25s

        if top_k < 1:
            raise ConfigError(f"--top-k must be >= 1, got {top_k}")
        k = min(top_k, len(self._doc_ids))
        qids = list(queries)
        q_tokens = bm25s.tokenize([queries[q].text for q in qids], stopwords=self.config.stopwords,
                                  stemmer=self._stemmer, show_progress=False, return_ids=False)
        run: Run = {}
        for qid, toks in zip(qids, q_tokens, strict=True):
            if not toks:
                logger.warning("query %s has no indexable terms after stop-word removal; empty result", qid)
                run[qid] = {}
                continue
            docs, scores = self._retriever.retrieve([toks], k=k, show_progress=False, return_as="tuple")
            run[qid] = {self._doc_ids[int(i)]: float(s) for i, s in zip(docs[0], scores[0], strict=True) if s > 0}
        return run

    def score_docs(self, query: str, doc_ids: Sequence[str]) -> dict[str, float]:
        """BM25 score of ``query`` for each of ``doc_ids`` (0 for documents sharing no term with it)."""
        import bm25s

        if not hasattr(self, "_pos"):
            self._pos = {d: i for i, d in enumerate(self._doc_ids)}
        toks = bm25s.tokenize([query], stopwords=self.config.stopwords, stemmer=self._stemmer, show_progress=False,
                              return_ids=False)[0]
        if not toks:
            return dict.fromkeys(doc_ids, 0.0)
        scores = self._retriever.get_scores(toks)
        return {d: float(scores[self._pos[d]]) for d in doc_ids}
