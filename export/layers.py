"""Derive shallower students (L3, L2 from L6) by keeping a subset of a trained model's layers.

Layers are dropped by the one layer dropper (:func:`distill.core.layers.drop_layers`, "spread": evenly
spaced, first and last included), so the report's L3/L2 match what ``distilrank student`` initialises.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from distill.core.atomic_io import atomic_dir
from distill.core.errors import MissingPrerequisiteError

__all__ = ["keep_layers"]

logger = logging.getLogger(__name__)


def keep_layers(model_dir: str | Path, num_layers: int, out_dir: str | Path) -> Path:
    """Save a copy of the BERT-style cross-encoder at ``model_dir`` keeping ``num_layers`` encoder layers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MissingPrerequisiteError(f"{model_dir} is not a Hugging Face model dir (no config.json)")
    from distill.core.cross_encoder import CAPS_FILE
    from distill.core.layers import drop_layers

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    total = model.config.num_hidden_layers
    kept = drop_layers(model, num_layers, "spread")
    with atomic_dir(out_dir) as stage:
        model.save_pretrained(str(stage))
        AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(stage))
        if (model_dir / CAPS_FILE).is_file():
            shutil.copy2(model_dir / CAPS_FILE, stage / CAPS_FILE)
    logger.info("kept layers %s of %d from %s", kept, total, model_dir)
    return Path(out_dir)
