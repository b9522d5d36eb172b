"""Teacher-score normalisation before distillation (config, never literals in code).

* ``raw``: the teacher's logits as they are (the label file's contract).
* ``zscore`` (default): per query, ``(s - mean) / std`` over all labelled docs of that query. The
  student then learns the teacher's within-query order and spacing without having to match an
  arbitrary offset and scale (an SFT'd LLM's logits drift by several units between runs); the
  regression targets stay near unit scale, so one learning rate works for any teacher.
* ``temperature``: ``s / T``; keeps cross-query offsets but shrinks (T > 1) or sharpens the scale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from distill.core.errors import ConfigError
from distill.core.normalization import zscore

__all__ = ["NormalizationConfig", "normalize_scores"]

logger = logging.getLogger(__name__)

NormMethod = Literal["raw", "zscore", "temperature"]


@dataclass(frozen=True)
class NormalizationConfig:
    method: NormMethod = "zscore"
    temperature: float = 1.0
    #: floor on the per-query std so a query whose docs all got one score does not explode
    min_std: float = 1e-6

    def __post_init__(self) -> None:
        if self.method not in ("raw", "zscore", "temperature"):
            raise ConfigError(f"normalization.method must be raw, zscore or temperature, got {self.method!r}")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ConfigError(f"normalization.temperature must be a positive number, got {self.temperature}")
        if not self.min_std > 0:
            raise ConfigError(f"normalization.min_std must be > 0, got {self.min_std}")


def normalize_scores(scores: Sequence[float], config: NormalizationConfig) -> list[float]:
    """Normalise one query's teacher scores (order preserved)."""
    values = [float(s) for s in scores]
    if any(not math.isfinite(v) for v in values):
        raise ValueError("teacher scores contain NaN or inf; the label file is corrupt")
    if config.method == "raw" or not values:
        return values
    if config.method == "temperature":
        return [v / config.temperature for v in values]
    return zscore(values, config.min_std)
