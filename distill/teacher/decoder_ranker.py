"""The decoder-only teacher ranker: a causal LM backbone + a linear score head on the last non-pad token.

Input text is ``template.format(query=, title=, text=)`` with the document part truncated to fit
``max_length - 1`` tokens, then the model's end-of-sequence token is appended
(RankLLaMA's ``query: ... document: ...</s>``), so the scored token is always the same one. The score is read at
the last position whose attention mask is 1 and position ids are computed from the mask, so left- and right-padded
batches give the same scores.

A teacher directory holds the backbone (HF ``save_pretrained``), its tokenizer, ``score_head.safetensors``
(``weight`` [1, hidden], ``bias`` [1]) and ``teacher.json`` (template, max_length, end token). Scores are
raw logits (unbounded, higher = more relevant).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from distill.core.atomic_io import atomic_write, write_json
from distill.core.errors import MissingPrerequisiteError
from distill.teacher._device import autocast, pick_device, pick_dtype
from distill.teacher.config import DEFAULT_TEMPLATE

__all__ = ["TeacherRanker", "TeacherScorer", "TeacherSpec", "encode_pairs", "last_token_index", "load_teacher",
           "save_teacher", "tokenize_pair"]

logger = logging.getLogger(__name__)

HEAD_FILE = "score_head.safetensors"
SPEC_FILE = "teacher.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TeacherSpec:
    template: str = DEFAULT_TEMPLATE
    max_length: int = 192
    end_token_id: int | None = None
    format_version: int = FORMAT_VERSION


def end_token_id(tokenizer, model_config) -> int:  # noqa: ANN001 - HF objects
    """The model's own end-of-sequence id (config), falling back to the tokenizer's.

    Why the config first: GGUF-converted tokenizers (SmolLM2) report ``<|im_start|>`` as eos, while the
    model was trained to end turns with ``<|im_end|>`` (config ``eos_token_id``).
    """
    eos = getattr(model_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise MissingPrerequisiteError("the teacher tokenizer and config define no eos token; "
                                       "set eos_token_id in config.json")
    return int(eos)


def prepare_tokenizer(tokenizer, model=None):  # noqa: ANN001, ANN201
    """Give the tokenizer a pad token and pin ``model.config.pad_token_id`` to it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position with mask 1 in each row (works for left and right padding)."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, seq], got shape {tuple(attention_mask.shape)}")
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    return (positions * attention_mask.long()).argmax(dim=1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift RoPE positions."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def split_template(template: str) -> tuple[str, str]:
    """(query part, document part): split before the first document field; whitespace goes to the document
    part so BPE sees `` word`` tokens, exactly as in the untruncated string."""
    cut = min(i for i in (template.find("{title}"), template.find("{text}")) if i >= 0)
    head, tail = template[:cut], template[cut:]
    stripped = head.rstrip()
    return stripped, head[len(stripped):] + tail


def tokenize_pair(tokenizer, query: str, title: str, text: str, template: str, max_length: int,  # noqa: ANN001
                  end_id: int) -> tuple[list[int], int]:
    """Ids of ``template`` filled in, document part truncated so that ids + end token fit ``max_length``.

    Returns (ids, n_prompt): the first ``n_prompt`` ids are the query part (with the tokenizer's own
    special tokens); the rest is the document and the end token.
    """
    q_part, d_part = split_template(template)
    prompt = tokenizer(q_part.format(query=query), add_special_tokens=True)["input_ids"][: max_length // 2]
    doc = " ".join(d_part.format(title=title, text=text).split())
    doc_ids = tokenizer(" " + doc if d_part[:1].isspace() else doc, add_special_tokens=False)["input_ids"]
    doc_ids = doc_ids[: max(0, max_length - len(prompt) - 1)]
    return list(prompt) + list(doc_ids) + [end_id], len(prompt)


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str, str]], template: str, max_length: int, end_id: int,  # noqa: ANN001
                 padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Tokenise (query, title, text) triples with :func:`tokenize_pair` and pad them into a batch."""
    rows = [tokenize_pair(tokenizer, q, t, x, template, max_length, end_id)[0] for q, t, x in pairs]
    return pad_rows(rows, tokenizer.pad_token_id, padding_side)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if padding_side == "left":
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        else:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


class TeacherRanker(nn.Module):
    """``model``: an HF causal LM (or bare decoder); ``score(...)`` -> raw logits [batch]."""

    def __init__(self, model: nn.Module, head: nn.Linear | None = None, seed: int = 0):
        super().__init__()
        self.model = model
        hidden = model.config.hidden_size
        if head is None:
            # a private generator: the head's initial weights depend on ``seed`` only, not on whatever
            # consumed the global RNG earlier in this process (a resumed run must equal an uninterrupted one)
            head = nn.Linear(hidden, 1)
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / math.sqrt(hidden))
                head.bias.zero_()
        self.head = head

    @property
    def backbone(self) -> nn.Module:
        """The decoder stack (``LlamaModel`` inside ``LlamaForCausalLM``); hidden states end with the final norm."""
        return getattr(self.model, "base_model", self.model)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        return out.last_hidden_state

    def score_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        idx = last_token_index(attention_mask)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        return self.head(last.to(self.head.weight.dtype)).squeeze(-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.score_hidden(self.hidden_states(input_ids, attention_mask), attention_mask)


def save_teacher(ranker: TeacherRanker, tokenizer, out_dir: str | os.PathLike[str], spec: TeacherSpec) -> Path:  # noqa: ANN001
    """Write backbone + tokenizer + score head (safetensors) + spec into ``out_dir`` (caller makes it atomic)."""
    from safetensors.torch import save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranker.model.config.pad_token_id = tokenizer.pad_token_id
    ranker.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    head = {k: v.detach().float().cpu().contiguous() for k, v in ranker.head.state_dict().items()}
    with atomic_write(out / HEAD_FILE, mode="wb") as fh:
        fh.write(save(head))
    write_json(out / SPEC_FILE, asdict(spec))
    return out


def load_teacher(path: str | os.PathLike[str], device: str | torch.device = "cpu", causal_lm: bool = False,
                 dtype: torch.dtype = torch.float32):  # -> tuple[TeacherRanker, tokenizer, TeacherSpec]
    """Load a teacher directory written by :func:`save_teacher`.

    ``causal_lm=False`` loads only the decoder stack (AutoModel), enough for scoring.
    """
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    for name in ("config.json", HEAD_FILE, SPEC_FILE):
        if not (path / name).exists():
            raise MissingPrerequisiteError(
                f"{path} is not a teacher directory ({name} missing); train one with `distilrank teacher sft`")
    spec_obj = json.loads((path / SPEC_FILE).read_text())
    spec = TeacherSpec(**{k: v for k, v in spec_obj.items() if k in TeacherSpec.__dataclass_fields__})
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    cls = AutoModelForCausalLM if causal_lm else AutoModel
    model = cls.from_pretrained(path, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    state = load_file(str(path / HEAD_FILE))
    head = nn.Linear(state["weight"].shape[1], 1)
    head.load_state_dict(state)
    ranker = TeacherRanker(model, head).to(device).eval()
    return ranker, tokenizer, spec


class TeacherScorer:
    """Scores (query, document) pairs with a trained teacher; ``score`` returns raw logits in input order.

    A document is given as its full text, or as ``(title, text)`` via :meth:`score_triples`.
    """

    def __init__(self, teacher_dir: str | os.PathLike[str], batch_size: int = 8, max_length: int | None = None,
                 device: str = "auto", precision: str = "auto"):
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.ranker, self.tokenizer, self.spec = load_teacher(teacher_dir, self.device)
        self.batch_size = batch_size
        self.max_length = max_length or self.spec.max_length
        self.end_id = self.spec.end_token_id if self.spec.end_token_id is not None else end_token_id(
            self.tokenizer, self.ranker.model.config)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return self.score_triples([(q, "", d) for q, d in pairs])

    @torch.inference_mode()
    def score_triples(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        # longest first keeps padding low within a batch; results are put back in input order
        order = sorted(range(len(triples)), key=lambda i: -len(triples[i][1]) - len(triples[i][2]))
        scores = [0.0] * len(triples)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = encode_pairs(self.tokenizer, [triples[i] for i in idx], self.spec.template, self.max_length,
                                 self.end_id)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with autocast(self.device, self.dtype):
                logits = self.ranker(**batch).float().cpu().tolist()
            for i, s in zip(idx, logits, strict=True):
                scores[i] = s
        return scores
