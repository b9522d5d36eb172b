"""The student: a BERT-style cross-encoder with one output logit.

Default base is all-MiniLM-L6-v2 (a sentence-embedding BERT; its encoder is kept, a fresh 1-logit
head is added). Any local HF encoder directory works.

Compression keeps ``num_layers`` of the base's layers. ``layer_strategy="spread"`` (default) keeps
evenly spaced layers *including the first and the last* (L6 -> L3 keeps 0, 2, 5; L6 -> L2 keeps
0, 5): the first layer sits on the embeddings it was trained with, the last is the one whose output
the base was fine-tuned to make useful, and spacing keeps a sample of every depth -- the same idea
as DistilBERT's every-other-layer initialisation. ``"first"`` keeps layers 0..N-1 (a contiguous
prefix, which is what most truncated checkpoints such as MiniLM-L-6 -> L-2 do; here it is kept for
ablation).

The saved directory is a standard HF directory (``BertForSequenceClassification``, ``num_labels=1``)
whose ``config.json`` carries ``sentence_transformers.activation_fn = torch.nn.Identity``, so
``sentence_transformers.CrossEncoder(path).predict`` returns the same raw logits as
:func:`score_pairs` instead of sigmoid probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from distill.base_models import resolve_student_base
from distill.errors import ConfigError, MissingPrerequisiteError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distill.data import Document, Query, Run

__all__ = ["StudentModelConfig", "build_student", "load_student", "rerank_with_student", "save_student",
           "score_pairs", "select_layers"]

logger = logging.getLogger(__name__)

IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class StudentModelConfig:
    base: str = "default"
    #: keep this many encoder layers (None = all)
    num_layers: int | None = None
    layer_strategy: Literal["spread", "first"] = "spread"
    #: tokens per (query, document) pair, truncation longest-first
    max_seq_len: int = 256

    def __post_init__(self) -> None:
        if self.num_layers is not None and self.num_layers < 1:
            raise ConfigError(f"student.num_layers must be >= 1 or null (keep all), got {self.num_layers}")
        if self.layer_strategy not in ("spread", "first"):
            raise ConfigError(f"student.layer_strategy must be 'spread' or 'first', got {self.layer_strategy!r}")
        if not 8 <= self.max_seq_len <= 8192:
            raise ConfigError(f"student.max_seq_len must be in [8, 8192], got {self.max_seq_len}")


def select_layers(total: int, keep: int, strategy: Literal["spread", "first"] = "spread") -> list[int]:
    """Indices of the layers kept (sorted). See the module docstring for why."""
    if not 1 <= keep <= total:
        raise ConfigError(f"cannot keep {keep} of {total} layers; choose 1..{total}")
    if strategy == "first" or keep == total:
        return list(range(keep))
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def _encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError(f"{type(model).__name__} has no encoder.layer list; layer dropping supports BERT-style "
                          "encoders (BERT, MiniLM, RoBERTa, ELECTRA). Set student.num_layers: null to keep all layers.")
    return layers


def build_student(config: StudentModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base encoder with a fresh 1-logit head and drop layers as configured."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_student_base(config.base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    if config.num_layers is not None:
        layers = _encoder_layers(model)
        keep = select_layers(len(layers), config.num_layers, config.layer_strategy)
        logger.info("student keeps layers %s of %d (%s)", keep, len(layers), config.layer_strategy)
        base = getattr(model, model.base_model_prefix, model)
        base.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
        model.config.num_hidden_layers = len(keep)
    tokenizer.model_max_length = config.max_seq_len
    return model, tokenizer


def save_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
                 max_seq_len: int) -> Path:
    """Write a standard HF directory that CrossEncoder loads with raw-logit (Identity) activation."""
    out_dir = Path(out_dir)
    model.config.sentence_transformers = {"activation_fn": IDENTITY_ACTIVATION}
    model.config.problem_type = "regression"
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.model_max_length = max_seq_len
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_student(path: str | Path, device: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise MissingPrerequisiteError(f"student directory {path} has no config.json; train one with "
                                       "`distilrank student train` or pass a trained model directory")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if model.config.num_labels != 1:
        raise ConfigError(f"{path}: a student must output one logit, this model has num_labels={model.config.num_labels}")
    if device:
        model.to(device)
    return model, AutoTokenizer.from_pretrained(path)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, queries: Sequence[str], docs: Sequence[str], max_len: int):
    return tokenizer(list(queries), list(docs), truncation=True, max_length=max_len, padding=True, return_tensors="pt")


def score_pairs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
                batch_size: int = 32, max_len: int | None = None) -> list[float]:
    """Raw logits for ``(query, document_text)`` pairs, in input order."""
    import torch

    max_len = max_len or min(tokenizer.model_max_length, 512)
    device = next(model.parameters()).device
    out: list[float] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            enc = encode_pairs(tokenizer, [q for q, _ in chunk], [d for _, d in chunk], max_len).to(device)
            out.extend(model(**enc).logits.view(-1).float().tolist())
    model.train(was_training)
    return out


def rerank_with_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, corpus: Mapping[str, Document],
                        queries: Mapping[str, Query], run: Run, top_k: int = 100, batch_size: int = 32,
                        max_len: int | None = None) -> Run:
    """Rescore each query's top-k first-stage candidates; scores are raw student logits."""
    pairs: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []
    for qid, docs in run.items():
        if qid not in queries:
            continue
        for doc_id, _ in sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]:
            if doc_id in corpus:
                pairs.append((queries[qid].text, corpus[doc_id].full_text))
                keys.append((qid, doc_id))
    scores = score_pairs(model, tokenizer, pairs, batch_size, max_len)
    out: Run = {}
    for (qid, doc_id), s in zip(keys, scores, strict=True):
        out.setdefault(qid, {})[doc_id] = s
    return out
