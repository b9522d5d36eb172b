"""What a rescore leaves out, read from the served model's card through the ranker's ``GET /info``.

The Python twin of the plugin's ``ModelDefaults``/``Interpolation`` (Java): the interpolation the model was
measured with, or, for a card without one (an older export), :meth:`Interpolation.conservative` over the scores
as served; the convention the ranker serves (``score``: ``raw_logit`` or ``sigmoid``); the card's checksum.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distill.core.errors import DataError
from distill.core.interpolation import Interpolation, ScoreConvention

__all__ = ["ModelDefaults", "ServedScores", "model_defaults", "to_convention"]

logger = logging.getLogger(__name__)

_CONVENTIONS = ("raw_logit", "sigmoid")
#: the largest double below 1: a served sigmoid of exactly 1.0 maps back to logit ~36.7, not infinity
_ONE_BELOW = 1.0 - 2.0**-53


@dataclass(frozen=True)
class ModelDefaults:
    """The card's blend (``interpolation``), the served convention, the card checksum and where they were read."""

    interpolation: Interpolation
    served: ScoreConvention
    card_sha256: str
    source: str
    #: True when the card has no interpolation and the documented conservative blend stands in
    fallback: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "card_sha256": self.card_sha256, "score": self.served,
                "fallback": self.fallback, "interpolation": self.interpolation.to_dict()}


def model_defaults(info: Mapping[str, object], source: str) -> ModelDefaults:
    """From a ranker's ``GET /info`` answer. A card without ``interpolation`` falls back, with a warning, to
    ``Interpolation.conservative()`` (w 0.6, zscore/zscore, window 20) over the scores as served: nothing was
    tuned for either convention, and turning a saturated sigmoid back into a logit loses information."""
    if not isinstance(info, Mapping):
        raise DataError(f"GET {source}/info is not a JSON object")
    served = info.get("score")
    served = served if served in _CONVENTIONS else "sigmoid"
    sha = info.get("card_sha256")
    sha = sha if isinstance(sha, str) else ""
    raw = info.get("interpolation")
    if isinstance(raw, Mapping):
        return ModelDefaults(Interpolation.from_dict(raw), served, sha, source)  # type: ignore[arg-type]
    fallback = dataclasses.replace(Interpolation.conservative(), score_convention=served)
    logger.warning("the ranker at %s serves a model card without an interpolation (an older export); using the "
                   "documented defaults: first_stage_weight %s, %s/%s, window %d, over its %s scores", source,
                   fallback.first_stage_weight, fallback.first_stage_norm, fallback.ranker_norm, fallback.depth, served)
    return ModelDefaults(fallback, served, sha, source, fallback=True)  # type: ignore[arg-type]


class ServedScores(list[float]):
    """Ranker scores in input order, with the convention the ranker served them in (``meta.score``)."""

    served: ScoreConvention | None = None

    def __init__(self, scores: Sequence[float], served: ScoreConvention | None) -> None:
        super().__init__(float(s) for s in scores)
        self.served = served


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _logit(p: float) -> float:
    q = min(max(p, sys.float_info.min), _ONE_BELOW)
    return math.log(q) - math.log1p(-q)


def to_convention(scores: Sequence[float], served: str | None, expected: str) -> list[float]:
    """Ranker scores as served in the convention the blend expects (the plugin's ``Blend.toConvention``);
    ``served`` None (unknown) keeps them as they are."""
    if served is None or served == expected:
        return [float(s) for s in scores]
    convert = _sigmoid if expected == "sigmoid" else _logit
    return [convert(float(s)) for s in scores]
