"""A long document is tokenised from a prefix, with exactly the tokens of the whole text (both real tokenizers)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.core.base_models import resolve_student_base
from distill.core.cross_encoder import PairEncoder, TokenCaps

WORDS = ("protein", "cell", "Zürich", "naïve", "CD4+", "(IL-2)", "β-catenin", "x" * 150, "日本語", "e.g.", "—", "1,000")


@pytest.fixture(scope="module")
def encoders() -> tuple[PairEncoder, PairEncoder]:
    base = resolve_student_base("default")
    cut, whole = PairEncoder(base, TokenCaps(64, 16)), PairEncoder(base, TokenCaps(64, 16))
    whole.prefix_chars_per_token = None
    return cut, whole


def _doc(rng: random.Random, n_words: int) -> str:
    seps = (" ", " ", " ", "\n", "\t", "  ", ", ", ". ")
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(n_words))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_words=st.integers(1, 1500))
def test_prefix_tokens_equal_whole_text_tokens(encoders: tuple[PairEncoder, PairEncoder], seed: int,
                                               n_words: int) -> None:
    cut, whole = encoders
    rng = random.Random(seed)
    docs = [_doc(rng, n_words), "y" * 5000 + " tail", _doc(rng, 3)]
    queries = ["what regulates beta-catenin in T cells"] * len(docs)
    assert cut.encode(queries, docs) == whole.encode(queries, docs)


def test_a_20000_character_document_is_cut_before_tokenising(encoders: tuple[PairEncoder, PairEncoder]) -> None:
    cut, _ = encoders
    doc = ("protein signalling in the cell " * 700)[:20000]
    encs = cut._encode_docs([doc], 61)
    assert len(encs[0].ids) > 61 and encs[0].offsets[-1][1] < 16 * 61 + 40  # only the prefix was tokenised
