"""Derive shallower students (L3, L2 from L6) by keeping a subset of a trained model's layers.

Layer choice comes from the student package's ``select_layers`` ("spread": evenly spaced, first and
last included), so the report's L3/L2 match what ``distilrank student`` would initialise.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distill.atomic_io import atomic_dir
from distill.errors import ConfigError, MissingPrerequisiteError

__all__ = ["keep_layers"]

logger = logging.getLogger(__name__)


def _select(total: int, keep: int) -> list[int]:
    try:
        from distill.student.model import select_layers
    except ImportError:  # student package absent: same "spread" rule
        if not 1 <= keep <= total:
            raise ConfigError(f"cannot keep {keep} of {total} layers; choose 1..{total}") from None
        if keep == 1:
            return [total - 1]
        return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})
    return list(select_layers(total, keep, "spread"))


def keep_layers(model_dir: str | Path, num_layers: int, out_dir: str | Path) -> Path:
    """Save a copy of the BERT-style cross-encoder at ``model_dir`` keeping ``num_layers`` encoder layers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MissingPrerequisiteError(f"{model_dir} is not a Hugging Face model dir (no config.json)")
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError(f"{type(model).__name__} has no encoder.layer list; only BERT-style encoders can drop layers")
    kept = _select(len(layers), num_layers)
    base.encoder.layer = torch.nn.ModuleList([layers[i] for i in kept])
    model.config.num_hidden_layers = len(kept)
    with atomic_dir(out_dir) as stage:
        model.save_pretrained(str(stage))
        AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(stage))
    logger.info("kept layers %s of %d from %s", kept, len(layers), model_dir)
    return Path(out_dir)
