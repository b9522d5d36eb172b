"""The teacher: CPT + rank SFT of a decoder-only LLM, candidate labelling, synthetic queries, reranking.

Imports are lazy (PEP 562) so ``import distill.teacher`` does not import torch.
"""

from __future__ import annotations

from distill.core.lazy import lazy_exports

__all__ = [
    "CPTConfig",
    "LabelConfig",
    "LoRAConfig",
    "SFTConfig",
    "SynthConfig",
    "TeacherRanker",
    "TeacherScorer",
    "YesNoScorer",
    "listwise_softmax_ce",
    "load_config",
    "load_teacher",
    "rerank_run",
    "rerank_with",
    "run_cpt",
    "run_label",
    "run_sft",
    "synthesize_queries",
]

_WHERE = {
    "CPTConfig": "config", "LabelConfig": "config", "LoRAConfig": "config", "SFTConfig": "config",
    "SynthConfig": "config", "load_config": "distill.core.config",
    "TeacherRanker": "scoring", "TeacherScorer": "scoring", "load_teacher": "scoring",
    "YesNoScorer": "zero_shot", "listwise_softmax_ce": "sft",
    "rerank_run": "rerank", "rerank_with": "rerank",
    "run_cpt": "cpt", "run_sft": "sft", "run_label": "label", "synthesize_queries": "synthesize",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, extra="train")
