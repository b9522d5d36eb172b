"""Student distillation: hybrid pointwise + margin-MSE loss, BERT cross-encoder, training, interpolation.

Imports here are lazy-safe: nothing below imports torch at package import time except
:mod:`.loss`, which is loaded on first attribute access.
"""

from __future__ import annotations

from distill.core.lazy import lazy_exports

__all__ = [
    "HybridDistillLoss",
    "InterpolationConfig",
    "InterpolationResult",
    "LossWeights",
    "NormalizationConfig",
    "PairConfig",
    "PairGroup",
    "StudentModelConfig",
    "StudentTrainConfig",
    "TrainResult",
    "build_groups",
    "build_student",
    "drop_layers",
    "interpolate_runs",
    "load_interpolation",
    "load_student",
    "margin_mse",
    "normalize_scores",
    "pointwise_mse",
    "save_student",
    "select_layers",
    "student_scorer",
    "train_student",
    "tune_alpha",
]

_WHERE = {
    "HybridDistillLoss": "loss", "LossWeights": "loss", "margin_mse": "loss", "pointwise_mse": "loss",
    "NormalizationConfig": "normalize", "normalize_scores": "normalize",
    "PairConfig": "pairs", "PairGroup": "pairs", "build_groups": "pairs",
    "StudentModelConfig": "model", "build_student": "model", "drop_layers": "model", "load_student": "model",
    "save_student": "model", "select_layers": "model", "student_scorer": "model",
    "StudentTrainConfig": "train", "TrainResult": "train", "train_student": "train",
    "InterpolationConfig": "interpolate", "InterpolationResult": "interpolate", "interpolate_runs": "interpolate",
    "load_interpolation": "interpolate", "tune_alpha": "interpolate",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, extra="train")
