"""Pipeline presets and config files.

A pipeline config is a JSON (or TOML) object with one section per stage; every section is optional
and overrides the preset it starts from::

    {"preset": "demo",
     "teacher_model": "default", "student_model": "default",
     "synth": {...SynthConfig}, "cpt": {...CPTConfig training fields}, "sft": {...SFTConfig},
     "label": {...LabelConfig}, "student": {...StudentTrainConfig},
     "eval": {"top_k": 20, "teacher_top_k": 10, "max_queries": 0, "teacher_batch_size": 8}}

Presets (wall times measured on the 2-core development machine, see README):

* ``tiny``: random 2-layer models built from configs with the real tokenizers; ~2 minutes; used by CI.
* ``demo``: the real base models (SmolLM2-135M teacher, all-MiniLM-L6-v2 student) on the bundled
  scifact_mini at a size that finishes within ~15 minutes on 2 CPU cores. The teacher gets only a
  handful of optimiser steps: it shows the machinery, not a good teacher.
* ``small``: the real base models on a full collection at a CPU-feasible size: 48.6 minutes on BEIR
  SciFact (README).
* ``full``: GPU scale (longer sequences, many steps, 15 negatives as in RankLLaMA).
"""

from __future__ import annotations

import copy
from typing import Any

from distill.errors import ConfigError

__all__ = ["PRESETS", "resolve_config"]

_TEACHER_CPU = {"max_length": 96, "batch_size": 2, "grad_accum": 1, "checkpoint_every": 50, "precision": "fp32"}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "teacher_model": "tiny", "student_model": "tiny",
        "synth": {"num_docs": 8, "max_new_tokens": 8},
        "cpt": {"max_length": 64, "batch_size": 4, "max_steps": 2, "max_pairs": 16},
        "sft": {"max_length": 64, "batch_size": 2, "max_steps": 2, "max_queries": 8, "num_negatives": 2},
        "label": {"max_length": 64, "max_queries": 12, "n_bm25": 5, "n_dense": 2, "n_random": 1, "batch_size": 16},
        "student": {"model": {"max_seq_len": 64}, "max_steps": 4, "batch_size": 4, "eval_steps": 2,
                    "dev_fraction": 0.3, "dev_top_k": 10, "pairs": {"n_negatives": 2}},
        "eval": {"top_k": 10, "teacher_top_k": 10, "max_queries": 10, "teacher_batch_size": 16},
    },
    "demo": {
        "teacher_model": "default", "student_model": "default",
        "synth": {"num_docs": 40},
        "cpt": {**_TEACHER_CPU, "max_steps": 4, "max_pairs": 16},
        "sft": {**_TEACHER_CPU, "max_steps": 6, "max_queries": 24, "num_negatives": 3},
        "label": {"max_length": 96, "max_queries": 60, "n_bm25": 8, "n_dense": 4, "n_random": 2, "batch_size": 16},
        "student": {"model": {"max_seq_len": 128}, "max_steps": 40, "batch_size": 4, "eval_steps": 20,
                    "dev_fraction": 0.2, "dev_top_k": 15, "pairs": {"n_negatives": 4}},
        "eval": {"top_k": 20, "teacher_top_k": 10, "max_queries": 0, "teacher_batch_size": 16},
    },
    "small": {
        # 48.6 min on 2 CPU cores for SciFact (README): teacher SFT/labelling/eval ~29 min, student ~16 min
        "teacher_model": "default", "student_model": "default",
        "synth": {"num_docs": 200},
        "cpt": {**_TEACHER_CPU, "max_length": 128, "max_steps": 40, "max_pairs": 160},
        "sft": {**_TEACHER_CPU, "max_length": 128, "max_steps": 50, "max_queries": 200, "num_negatives": 3},
        "label": {"max_length": 128, "max_queries": 120, "n_bm25": 10, "n_dense": 4, "n_random": 2, "batch_size": 16},
        "student": {"model": {"max_seq_len": 192}, "max_steps": 250, "batch_size": 4, "eval_steps": 50,
                    "pairs": {"n_negatives": 4, "groups_per_query": 3}},
        "eval": {"top_k": 20, "teacher_top_k": 20, "max_queries": 100, "teacher_batch_size": 16},
    },
    "full": {
        "teacher_model": "default", "student_model": "default",
        "synth": {"num_docs": 5000},
        "cpt": {"max_length": 512, "batch_size": 8, "epochs": 1, "checkpoint_every": 500, "gradient_checkpointing": True},
        "sft": {"max_length": 512, "batch_size": 4, "epochs": 2, "num_negatives": 15, "negative_depth": 100,
                "gradient_checkpointing": True, "kl_weight": 0.1},
        "label": {"max_length": 512, "n_bm25": 50, "n_dense": 30, "n_random": 10, "batch_size": 32},
        "student": {"model": {"max_seq_len": 256}, "epochs": 2, "batch_size": 32, "eval_steps": 500},
        "eval": {"top_k": 100, "teacher_top_k": 100, "max_queries": 0, "teacher_batch_size": 32},
    },
}

_SECTIONS = {"preset", "teacher_model", "student_model", "synth", "cpt", "sft", "label", "student", "eval"}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_config(preset: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Preset (default ``demo``) merged with a config file's sections; unknown sections are an error."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - _SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    name = preset or overrides.pop("preset", None) or "demo"
    overrides.pop("preset", None)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return {"preset": name, **_merge(PRESETS[name], overrides)}
