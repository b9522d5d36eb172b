"""Distillation losses: pointwise MSE + margin-MSE (DisRanker's hybrid, arXiv 2411.04539), and listwise KL
(RankGPT-style distillation of a ranking: the student's softmax over a query's candidates matched to the
teacher's).

All scores are raw (un-normalised) relevance logits, shape ``(batch,)`` or ``(batch, group)``; a group is one
query's candidate list (``[d+, d-_1..d-_n]``, a sample of its labelled candidates, or all of them with
``n_negatives`` = candidates - 1). Teacher scores are constants: they are detached here so no gradient ever
reaches them.
"""

from __future__ import annotations

import logging
import math

import torch

from distill.student.loss_weights import LossWeights

__all__ = ["HybridDistillLoss", "ListwiseKLLoss", "listwise_kl", "margin_mse", "pointwise_mse"]

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


def listwise_kl(s_s: torch.Tensor, s_t: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """mean over rows of KL(softmax(s_T / T) || softmax(s_S / T)) * T^2, each row one query's candidate list.

    ``s_s`` and ``s_t`` are ``(batch, group)``. The T^2 factor (Hinton et al., 1503.02531) keeps the gradient's
    size the same across temperatures, so one learning rate serves any T. Zero when the student's scores equal
    the teacher's up to a per-row constant: only the order and spacing within a list are taught.
    """
    log_p_t = torch.log_softmax(s_t.detach() / temperature, dim=-1)
    log_p_s = torch.log_softmax(s_s / temperature, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1).mean() * temperature ** 2


def check_scores(student: torch.Tensor, teacher: torch.Tensor) -> None:
    """ValueError unless both are finite ``(batch, group)`` tensors of one shape with ``group >= 2``."""
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


def _finite(total: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(total):
        raise ValueError(f"distillation loss is not finite ({total.item()}); lower the learning rate or normalise "
                         "teacher scores")
    return total


class ListwiseKLLoss(torch.nn.Module):
    """:func:`listwise_kl` over groups: ``forward(student, teacher)``, both ``(batch, group)``, ``group >= 2``.

    Raises ValueError on a shape mismatch and on NaN/inf in inputs or in the loss.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"listwise temperature must be a positive number, got {temperature}")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        check_scores(student, teacher)
        return _finite(listwise_kl(student, teacher.detach().to(student.dtype), self.temperature))


class HybridDistillLoss(torch.nn.Module):
    """L = w_point * pointwise_mse + w_margin * margin_mse (+ w_list * listwise_kl) over groups ``[d+, d-_1..d-_n]``.

    ``forward(student, teacher)``: both ``(batch, group)`` with ``group >= 2``; column 0 is the positive.
    Raises ValueError on a shape mismatch and on NaN/inf in inputs or in the loss.
    """

    def __init__(self, weights: LossWeights | None = None):
        super().__init__()
        self.weights = weights or LossWeights()

    def components(self, student: torch.Tensor, teacher: torch.Tensor) -> dict[str, torch.Tensor]:
        check_scores(student, teacher)
        w = self.weights
        teacher = teacher.detach().to(student.dtype)
        point = pointwise_mse(student, teacher)
        margin = margin_mse(student[:, 0], student[:, 1:], teacher[:, :1] - teacher[:, 1:])
        total = w.pointwise * point + w.margin * margin
        parts = {"pointwise": point, "margin": margin}
        if w.listwise > 0:
            parts["listwise"] = listwise_kl(student, teacher, w.listwise_temperature)
            total = total + w.listwise * parts["listwise"]
        return {"loss": _finite(total), **parts}

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.components(student, teacher)["loss"]
