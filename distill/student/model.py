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

Scoring goes through :mod:`distill.core.cross_encoder` (one truncation rule, length-bucketed batches),
with the token caps of :class:`StudentModelConfig` saved beside the model in ``scoring.json``.

The saved directory is a standard HF directory (``BertForSequenceClassification``, ``num_labels=1``)
whose ``config.json`` carries ``sentence_transformers.activation_fn = torch.nn.Identity`` (and
``config_sentence_transformers.json`` the same, with ``model_type: CrossEncoder``), so
``sentence_transformers.CrossEncoder(path).predict`` returns the same raw logits as our scorer instead of
sigmoid probabilities. The tokenizer's ``model_max_length`` is the pair budget ``max_seq_len``, which is
CrossEncoder's ``max_length``: with its ``longest_first`` truncation it keeps the same tokens as our scorer
for every query within the query cap; where it cannot (longer queries, a document cap) the README model card
says so (:func:`distill.core.readme_card.truncation_note`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from distill.core.atomic_io import write_json
from distill.core.base_models import resolve_student_base
from distill.core.cross_encoder import (
    DEFAULT_MAX_QUERY_TOKENS,
    DEFAULT_MAX_SEQ_LEN,
    CrossEncoderScorer,
    PairEncoder,
    TokenCaps,
    TorchBackend,
    load_caps,
    save_caps,
)
from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.layers import drop_layers, select_layers
from distill.core.readme_card import ReadmeCard, write_readme

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


__all__ = ["StudentModelConfig", "base_ranks", "build_student", "drop_layers", "load_student", "save_student",
           "select_layers", "student_scorer"]

logger = logging.getLogger(__name__)

IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class StudentModelConfig:
    base: str = "default"
    #: keep this many encoder layers (None = all)
    num_layers: int | None = None
    layer_strategy: Literal["spread", "first"] = "spread"
    #: token budget of a (query, document) pair (see distill.core.cross_encoder.TokenCaps); saved with the model.
    #: 256 (query <= 32, so the document gets >= 221): on SciFact's long abstracts the token-budget bench chose
    #: 32:224 on dev queries (docs/results.md, "Token caps"). Padding is per length bucket, so short documents
    #: cost no more; the CPU presets set their own (cheaper) budget.
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN
    max_query_tokens: int | None = DEFAULT_MAX_QUERY_TOKENS
    max_doc_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.num_layers is not None and self.num_layers < 1:
            raise ConfigError(f"student.num_layers must be >= 1 or null (keep all), got {self.num_layers}")
        if self.layer_strategy not in ("spread", "first"):
            raise ConfigError(f"student.layer_strategy must be 'spread' or 'first', got {self.layer_strategy!r}")
        _ = self.caps  # validates the token budget

    @property
    def caps(self) -> TokenCaps:
        return TokenCaps(self.max_seq_len, self.max_query_tokens, self.max_doc_tokens)


def build_student(config: StudentModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the base encoder with a 1-logit head and drop layers as configured.

    A plain encoder (all-MiniLM-L6-v2) gets a fresh head. A trained 1-logit cross-encoder (e.g. the L6 student)
    keeps its head and the kept layers' weights: with ``num_layers`` that is "cut, then distil again", the
    initialisation of the L3/L2 students in the README's "Speed at quality".
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_student_base(config.base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    if config.num_layers is not None:
        total = model.config.num_hidden_layers
        keep = drop_layers(model, config.num_layers, config.layer_strategy)
        logger.info("student keeps layers %s of %d (%s)", keep, total, config.layer_strategy)
    tokenizer.model_max_length = config.max_seq_len
    return model, tokenizer


def base_ranks(model: PreTrainedModel) -> bool:
    """Whether the base that :func:`build_student` built ``model`` from was already a 1-logit cross-encoder (a
    trained student, a user's reranker): its config names a sequence-classification model, whose head was kept (a
    head of another size does not load), so it starts with a relevance prior of its own. A plain encoder
    (all-MiniLM-L6-v2, a ``BertModel``) got a fresh head."""
    return any(a.endswith("ForSequenceClassification") for a in model.config.architectures or [])


def save_student(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
                 caps: TokenCaps, card: ReadmeCard | None = None) -> Path:
    """Write a standard HF directory (CrossEncoder loads it with raw-logit Identity activation), ``scoring.json``
    and a ``README.md`` model card (``card``; without one, a card of what the model itself says)."""
    out_dir = Path(out_dir)
    model.config.sentence_transformers = {"activation_fn": IDENTITY_ACTIVATION}
    model.config.problem_type = "regression"
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.model_max_length = caps.max_seq_len
    tokenizer.save_pretrained(out_dir)
    save_caps(out_dir, caps)
    write_json(out_dir / "config_sentence_transformers.json",
               {"model_type": "CrossEncoder", "activation_fn": IDENTITY_ACTIVATION, "prompts": {},
                "default_prompt_name": None})
    specials = int(tokenizer.num_special_tokens_to_add(pair=True))
    card = card or ReadmeCard(name=out_dir.name)
    write_readme(out_dir, dataclasses.replace(
        card, caps=card.caps or caps.to_dict(), special_tokens=specials,
        architecture=card.architecture or (model.config.architectures or [""])[0],
        num_layers=card.num_layers or model.config.num_hidden_layers))
    return out_dir


def load_student(path: str | Path, device: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise MissingPrerequisiteError(f"student directory {path} has no config.json; train one with "
                                       "`distilrank student train` or pass a trained model directory")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if model.config.num_labels != 1:
        raise ConfigError(f"{path}: a student must output one logit, "
                          f"this model has num_labels={model.config.num_labels}")
    if device:
        model.to(device)
    return model, AutoTokenizer.from_pretrained(path)


def student_scorer(model: PreTrainedModel | str | Path, tokenizer: PreTrainedTokenizerBase | None = None,
                   caps: TokenCaps | None = None, pairs_per_call: int = 32) -> CrossEncoderScorer:
    """The shared cross-encoder scorer over an in-memory student (training) or a saved student directory."""
    if isinstance(model, str | Path):
        loaded, _ = load_student(model)
        return CrossEncoderScorer(PairEncoder(model, caps or load_caps(model)), TorchBackend(loaded), pairs_per_call)
    if tokenizer is None or caps is None:
        raise ValueError("an in-memory student needs its tokenizer and token caps")
    return CrossEncoderScorer(PairEncoder(tokenizer.backend_tokenizer, caps), TorchBackend(model), pairs_per_call)
