"""Student distillation: hybrid pointwise + margin-MSE (or listwise) loss, BERT cross-encoder, a warm-up on the
corpus, training with a dev signal and checkpoint rule, interpolation, and the never-regress guard.

Imports here are lazy-safe: nothing below imports torch at package import time except
:mod:`.loss`, which is loaded on first attribute access.
"""

from __future__ import annotations

from distill.core.lazy import lazy_exports

__all__ = [
    "DevCheck",
    "DevVerdict",
    "HybridDistillLoss",
    "InterpolationConfig",
    "InterpolationResult",
    "ListwiseKLLoss",
    "LossWeights",
    "NormalizationConfig",
    "PairConfig",
    "PairGroup",
    "StudentModelConfig",
    "StudentTrainConfig",
    "TrainResult",
    "WarmupConfig",
    "build_groups",
    "build_student",
    "choose_checkpoint",
    "dev_signal_check",
    "dev_verdict",
    "drop_layers",
    "interpolate_runs",
    "load_interpolation",
    "listwise_kl",
    "load_student",
    "margin_mse",
    "normalize_scores",
    "pointwise_mse",
    "random_ndcg",
    "run_warmup",
    "save_student",
    "select_layers",
    "student_scorer",
    "train_student",
    "tune_alpha",
]

_WHERE = {
    "HybridDistillLoss": "loss", "LossWeights": "loss_weights", "margin_mse": "loss", "pointwise_mse": "loss",
    "ListwiseKLLoss": "loss", "listwise_kl": "loss",
    "DevCheck": "dev_signal", "choose_checkpoint": "dev_signal", "dev_signal_check": "dev_signal",
    "random_ndcg": "dev_signal", "DevVerdict": "guard", "dev_verdict": "guard",
    "WarmupConfig": "warmup", "run_warmup": "warmup",
    "NormalizationConfig": "normalize", "normalize_scores": "normalize",
    "PairConfig": "pairs", "PairGroup": "pairs", "build_groups": "pairs",
    "StudentModelConfig": "model", "build_student": "model", "drop_layers": "model", "load_student": "model",
    "save_student": "model", "select_layers": "model", "student_scorer": "model",
    "StudentTrainConfig": "train", "TrainResult": "train", "train_student": "train",
    "InterpolationConfig": "interpolate", "InterpolationResult": "interpolate", "interpolate_runs": "interpolate",
    "load_interpolation": "interpolate", "tune_alpha": "interpolate",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, extra="train")
