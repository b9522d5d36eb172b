"""Random 2-layer models built from configs with the real tokenizers: the ``tiny`` preset and the tests.

They exercise every code path (training, labelling, export, serving) in seconds; their scores mean nothing.
Both builders are idempotent and atomic: an existing ``out/config.json`` is reused.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TINY_MAX_TOKENS", "build_tiny_cross_encoder", "build_tiny_decoder"]

#: the tiny encoder's tokenizer limit (``model_max_length``): what sentence-transformers embeds per text
TINY_MAX_TOKENS = 128


def build_tiny_decoder(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """A Llama-style causal LM (hidden 32) with the SmolLM2 tokenizer, saved as an HF dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.core.atomic_io import atomic_dir
    from distill.core.base_models import resolve_teacher_base

    out = Path(out)
    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(resolve_teacher_base("default"))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True)
    with atomic_dir(out) as tmp:
        LlamaForCausalLM(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def build_tiny_cross_encoder(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """A BERT (hidden 32) with one output logit and the all-MiniLM-L6-v2 tokenizer, saved as an HF dir
    that ``sentence_transformers.CrossEncoder`` loads."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from distill.core.atomic_io import atomic_dir
    from distill.core.base_models import resolve_student_base

    out = Path(out)
    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(resolve_student_base("default"))
    # as a bi-encoder (the tiny preset's dense member) sentence-transformers would embed up to 512 tokens per
    # document: most of a tiny pipeline run's time for nothing, since the scores mean nothing anyway
    tok.model_max_length = TINY_MAX_TOKENS
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    with atomic_dir(out) as tmp:
        BertForSequenceClassification(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
