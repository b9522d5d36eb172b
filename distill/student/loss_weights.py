"""The distillation loss's weights: a config dataclass apart from the loss itself, so that a config can be built
and validated (``distilrank pipeline --help``, the pipeline's typed config) without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from distill.core.errors import ConfigError

__all__ = ["LossWeights"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms, and the listwise temperature.

    The defaults are the hybrid, both terms weighed equally as DisRanker's is; set one to 0 to ablate it.
    ``listwise`` > 0 adds the listwise KL over each group; ``pointwise=0, margin=0, listwise=1`` is listwise
    distillation alone. ``listwise_temperature`` divides both score lists before the softmax (the teacher's
    scores are normalised first, z-scored by default, so T = 1 is a softmax over z-scores).
    """

    pointwise: float = 1.0
    margin: float = 1.0
    listwise: float = 0.0
    listwise_temperature: float = 1.0

    def __post_init__(self) -> None:
        weights = (self.pointwise, self.margin, self.listwise)
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) == 0:
            raise ConfigError(f"loss weights must be >= 0 and not all 0, got pointwise={self.pointwise}, "
                             f"margin={self.margin}, listwise={self.listwise}")
        if not self.listwise_temperature > 0 or not math.isfinite(self.listwise_temperature):
            raise ConfigError(f"loss.listwise_temperature must be a positive number, got {self.listwise_temperature}")
