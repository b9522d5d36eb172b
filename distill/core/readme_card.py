"""The Hugging Face-style ``README.md`` model card of a model directory (student or export).

What the Hub and ``huggingface_hub.ModelCard`` read: a YAML front matter (``library_name``, ``pipeline_tag``,
``tags``, ``base_model``) and Markdown sections for people: the model, its base, teacher and data, metrics,
token caps, how to load it, and intended use. The machine-readable card that serving trusts stays
:mod:`distill.core.model_card`; this one is for people and the Hub, written from the same facts.

sentence-transformers and distilrank truncate differently, and the card says exactly where
(:func:`truncation_note`): a ``CrossEncoder`` has one ``max_length`` and truncates a pair ``longest_first``;
distilrank first caps the query at ``max_query_tokens`` (and the document at ``max_doc_tokens``) and gives the
document the rest of ``max_seq_len``. For a query of at most ``min(max_query_tokens, room // 2)`` tokens and no
document cap, both keep exactly the same tokens (``room`` = ``max_seq_len`` minus the special tokens).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.core.atomic_io import atomic_write

__all__ = ["README_FILE", "ReadmeCard", "render_readme", "truncation_note", "write_readme"]

README_FILE = "README.md"


@dataclass(frozen=True)
class ReadmeCard:
    """Facts for the README. ``base_model`` is the base's Hub id (front matter) when it came from the Hub;
    ``base`` describes it for people (name, revision); ``caps`` holds ``max_seq_len``, ``max_query_tokens``,
    ``max_doc_tokens``; ``metrics`` maps a metric name to its value."""

    name: str
    #: a trained student (PyTorch weights) or an export (ONNX, served by ``distilrank serve``)
    kind: Literal["student", "export"] = "student"
    architecture: str = ""
    num_layers: int | None = None
    base: Mapping[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    teacher: str | None = None
    data: Sequence[str] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    caps: Mapping[str, int | None] = field(default_factory=dict)
    special_tokens: int = 3
    intended_use: str = ("Second-stage reranking of (query, passage) pairs retrieved by a first stage such as "
                         "BM25, in the language and domain of the training data. Scores are raw logits: compare "
                         "them within one query's candidates, not across queries or models.")
    notes: Sequence[str] = ()


def truncation_note(caps: Mapping[str, int | None], special_tokens: int = 3) -> str:
    """Where a sentence-transformers ``CrossEncoder`` keeps other tokens than distilrank's scorer (see above)."""
    max_len = caps.get("max_seq_len")
    if not max_len:
        return ""
    room = max_len - special_tokens
    q_cap = min(caps.get("max_query_tokens") or room // 2, room // 2)
    note = (f"sentence-transformers truncates each pair to max_length = {max_len} tokens, longest sequence "
            f"first; distilrank caps the query at {q_cap} tokens and gives the document the rest. For a query of "
            f"at most {q_cap} tokens both keep exactly the same tokens and give the same scores. A longer query "
            "keeps its extra tokens in sentence-transformers (up to half the pair), and the document loses as many.")
    if caps.get("max_doc_tokens"):
        note += (f" distilrank also caps the document at {caps['max_doc_tokens']} tokens, which sentence-transformers "
                 "cannot: on longer documents it reads more of the document than distilrank does.")
    return note


def _front_matter(card: ReadmeCard) -> str:
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: text-ranking",
             "tags:", "- cross-encoder", "- reranker", "- distilrank"]
    if card.base_model:
        lines.append(f"base_model: {json.dumps(card.base_model)}")
    return "\n".join([*lines, "---", ""])


def _table(rows: Sequence[tuple[str, object]]) -> str:
    body = "\n".join(f"| {k} | {v} |" for k, v in rows if v not in (None, "", {}))
    return "| | |\n|---|---|\n" + body if body else ""


def _model_section(card: ReadmeCard) -> str:
    base = card.base
    revision = f" (revision `{base['revision']}`)" if base.get("revision") else ""
    rows = [("Architecture", card.architecture), ("Layers", card.num_layers),
            ("Base model", f"{base.get('name', '')}{revision}" if base else None),
            ("Teacher", card.teacher), ("Training data", ", ".join(card.data) if card.data else None),
            ("Max tokens per pair", card.caps.get("max_seq_len")),
            ("Max query tokens", card.caps.get("max_query_tokens")),
            ("Max document tokens", card.caps.get("max_doc_tokens"))]
    return "## Model\n\n" + _table(rows) + "\n"


def _use_section(card: ReadmeCard) -> str:
    if card.kind == "export":
        return f"""## Use

```bash
distilrank serve --model PATH/TO/{card.name}   # POST /v1/rerank, Cohere-style
```

The ONNX model reads `input_ids`, `attention_mask` and `token_type_ids` and returns one logit per pair; the
token caps above are applied by distilrank's scorer before it.
"""
    return f"""## Use

With distilrank (the scorer that applies the token caps above):

```bash
distilrank export --model PATH/TO/{card.name} --out {card.name}-onnx   # ONNX, checked against this model
distilrank serve --model {card.name}-onnx
```

With sentence-transformers:

```python
from sentence_transformers import CrossEncoder

model = CrossEncoder("PATH/TO/{card.name}")  # raw logits: the saved activation is Identity
scores = model.predict([("what causes fever", "Fever is caused by ..."), ("what causes fever", "...")])
```

{truncation_note(card.caps, card.special_tokens)}
"""


def render_readme(card: ReadmeCard) -> str:
    parts = [_front_matter(card), f"# {card.name}\n",
             "A cross-encoder reranker distilled from a larger teacher with distilrank: it reads a (query, "
             "passage) pair and returns one relevance logit.\n", _model_section(card)]
    if card.metrics:
        rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                         for k, v in card.metrics.items())
        parts.append(f"## Metrics\n\n| Metric | Value |\n|---|---|\n{rows}\n")
    parts.append(_use_section(card))
    parts.append(f"## Intended use and limits\n\n{card.intended_use}\n")
    if card.notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in card.notes) + "\n")
    return "\n".join(parts)


def write_readme(model_dir: str | Path, card: ReadmeCard) -> Path:
    """Write ``README.md`` into ``model_dir`` atomically; returns its path."""
    path = Path(model_dir) / README_FILE
    with atomic_write(path) as f:
        f.write(render_readme(card))
    return path
