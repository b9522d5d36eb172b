"""Distillation losses: pointwise MSE + margin-MSE (DisRanker's hybrid, arXiv 2411.04539).

All scores are raw (un-normalised) relevance logits, shape ``(batch,)`` or ``(batch, group)``.
Teacher scores are constants: they are detached here so no gradient ever reaches them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

__all__ = ["HybridDistillLoss", "LossWeights", "margin_mse", "pointwise_mse"]

logger = logging.getLogger(__name__)


def pointwise_mse(s_s: torch.Tensor, s_t: torch.Tensor) -> torch.Tensor:
    """mean over all elements of (s_S - s_T)^2; keeps the teacher's absolute scores."""
    return torch.mean((s_s - s_t.detach()) ** 2)


def margin_mse(s_pos: torch.Tensor, s_neg: torch.Tensor, t_margin: torch.Tensor) -> torch.Tensor:
    """mean over (d+, d-) of [(s_S(d+) - s_S(d-)) - (s_T(d+) - s_T(d-))]^2 (Hofstätter et al., 2010.02666).

    ``s_pos`` is ``(batch,)``; ``s_neg`` and ``t_margin`` are ``(batch, n_neg)`` (or ``(batch,)`` for one
    negative); ``t_margin[i, j] = s_T(q_i, d+_i) - s_T(q_i, d-_ij)``.
    """
    if s_neg.dim() == 2 and s_pos.dim() == 1:
        s_pos = s_pos.unsqueeze(1)
    return torch.mean(((s_pos - s_neg) - t_margin.detach()) ** 2)


@dataclass(frozen=True)
class LossWeights:
    """Defaults weigh both terms equally, as DisRanker's hybrid does; set one to 0 to ablate it."""

    pointwise: float = 1.0
    margin: float = 1.0

    def __post_init__(self) -> None:
        if self.pointwise < 0 or self.margin < 0 or self.pointwise + self.margin == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got pointwise={self.pointwise}, margin={self.margin}")


class HybridDistillLoss(torch.nn.Module):
    """L = w_point * pointwise_mse + w_margin * margin_mse over groups ``[d+, d-_1, ..., d-_n]``.

    ``forward(student, teacher)``: both ``(batch, group)`` with ``group >= 2``; column 0 is the positive.
    Raises ValueError on a shape mismatch and on NaN/inf in inputs or in the loss.
    """

    def __init__(self, weights: LossWeights | None = None):
        super().__init__()
        self.weights = weights or LossWeights()

    @staticmethod
    def _check(student: torch.Tensor, teacher: torch.Tensor) -> None:
        if student.dim() != 2:
            raise ValueError(f"student scores must be 2-D (batch, group) with column 0 the positive, got shape "
                             f"{tuple(student.shape)}; reshape with scores.view(batch, 1 + n_neg)")
        if student.shape != teacher.shape:
            raise ValueError(f"student scores {tuple(student.shape)} and teacher scores {tuple(teacher.shape)} must have "
                             "the same (batch, group) shape; build both from the same pair groups")
        if student.shape[1] < 2:
            raise ValueError(f"each group needs a positive and at least one negative (group >= 2), got group size "
                             f"{student.shape[1]}; set n_negatives >= 1")
        for name, t in (("student", student), ("teacher", teacher)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} scores contain NaN or inf; check the label file and the learning rate")

    def components(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check(student, teacher)
        teacher = teacher.detach().to(student.dtype)
        point = pointwise_mse(student, teacher)
        margin = margin_mse(student[:, 0], student[:, 1:], teacher[:, :1] - teacher[:, 1:])
        total = self.weights.pointwise * point + self.weights.margin * margin
        if not torch.isfinite(total):
            raise ValueError(f"distillation loss is not finite ({total.item()}); lower the learning rate or normalise teacher scores")
        return {"loss": total, "pointwise": point, "margin": margin}

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.components(student, teacher)["loss"]
