"""A student directory is a sentence-transformers CrossEncoder that scores like distilrank wherever the two
truncation rules keep the same tokens, and carries a Hugging Face-style README model card saying where not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.core.bm25 import BM25Index
from distill.core.cross_encoder import TokenCaps
from distill.core.formats import read_corpus, read_queries
from distill.core.readme_card import ReadmeCard, truncation_note

CAPS = TokenCaps(max_seq_len=64, max_query_tokens=8)  # every bundled pair is longer than 64 tokens


@pytest.fixture(scope="module")
def student_dir(tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.student.model import save_student

    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir)
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    card = ReadmeCard(name="tiny-student", base={"name": "org/base", "revision": "c" * 40}, base_model="org/base",
                      teacher="BM25 + dense ensemble", data=["SciFact train"], metrics={"nDCG@10 (dev)": 0.5})
    return save_student(model, tok, tmp_path_factory.mktemp("student") / "tiny-student", CAPS, card)


def test_crossencoder_loads_the_student_and_scores_like_distilrank(student_dir: Path, demo_data: Path) -> None:
    """Every bundled test query, its BM25 top 10 (pairs longer than the caps): a query within the query cap gets
    the same scores from sentence-transformers as from distilrank's scorer; a longer query is the documented
    difference (sentence-transformers keeps more of the query and less of the document)."""
    from sentence_transformers import CrossEncoder

    from distill.student.model import student_scorer

    ce = CrossEncoder(str(student_dir))
    assert ce.max_seq_length == CAPS.max_seq_len and type(ce.activation_fn).__name__ == "Identity"
    scorer = student_scorer(student_dir)
    corpus, queries = read_corpus(demo_data / "corpus.jsonl"), read_queries(demo_data / "queries.test.tsv")
    run = BM25Index(corpus).search(queries, top_k=10)
    within, beyond = [], []
    for qid, docs in run.items():
        q, texts = queries[qid].text, [corpus[d].full_text for d in docs]
        diff = np.abs(scorer.score([q] * len(texts), texts) - ce.predict([(q, t) for t in texts])).max()
        n_query = len(ce.tokenizer(q, add_special_tokens=False)["input_ids"])
        (within if n_query <= CAPS.max_query_tokens else beyond).append(float(diff))
    assert within and max(within) < 1e-6, max(within)  # the same tokens: the same logits
    assert beyond and max(beyond) > 1e-6  # the measured difference the card documents (a random tiny model)


def test_the_student_directory_carries_a_readme_and_a_sentence_transformers_config(student_dir: Path) -> None:
    readme = (student_dir / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: sentence-transformers\npipeline_tag: text-ranking\n")
    assert 'base_model: "org/base"' in readme and f"revision `{'c' * 40}`" in readme
    for fact in ("BertForSequenceClassification", "| Layers | 2 |", "| Max tokens per pair | 64 |",
                 "| Max query tokens | 8 |", "BM25 + dense ensemble", "SciFact train", "| nDCG@10 (dev) | 0.5000 |",
                 "caps the query at 8 tokens", "## Intended use and limits"):
        assert fact in readme, fact
    st = json.loads((student_dir / "config_sentence_transformers.json").read_text())
    assert st["model_type"] == "CrossEncoder" and st["activation_fn"].endswith("Identity")


def test_truncation_note_names_each_difference() -> None:
    assert "caps the query at 30 tokens" in truncation_note({"max_seq_len": 64, "max_query_tokens": None})
    note = truncation_note({"max_seq_len": 256, "max_query_tokens": 32, "max_doc_tokens": 100})
    assert "caps the query at 32 tokens" in note and "caps the document at 100 tokens" in note
    assert truncation_note({}) == ""
