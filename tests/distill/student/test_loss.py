from __future__ import annotations

import pytest
import torch

from distill.core.errors import ConfigError
from distill.student.loss import (
    HybridDistillLoss,
    ListwiseKLLoss,
    listwise_kl,
    margin_mse,
    pointwise_mse,
)
from distill.student.loss_weights import LossWeights


def test_pointwise_mse_hand_computed() -> None:
    s = torch.tensor([1.0, 2.0, 3.0])
    t = torch.tensor([1.5, 2.0, 1.0])
    # (0.25 + 0 + 4) / 3
    assert pointwise_mse(s, t).item() == pytest.approx(4.25 / 3)


def test_margin_mse_hand_computed() -> None:
    s_pos = torch.tensor([2.0, 0.0])
    s_neg = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
    t_margin = torch.tensor([[2.0, 2.0], [0.0, 0.0]])
    # student margins [[1, 2], [-1, 1]] minus teacher [[2, 2], [0, 0]] -> [[-1, 0], [-1, 1]]; mean sq = 3/4
    assert margin_mse(s_pos, s_neg, t_margin).item() == pytest.approx(0.75)


def test_hybrid_combines_weighted_terms() -> None:
    student = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.0], [1.0, -1.0]])
    # pointwise: (1 + 0 + 1 + 1) / 4 = 0.75; margins s [2, 0], t [1, 2] -> (1 + 4) / 2 = 2.5
    parts = HybridDistillLoss(LossWeights(pointwise=0.5, margin=2.0)).components(student, teacher)
    assert parts["pointwise"].item() == pytest.approx(0.75)
    assert parts["margin"].item() == pytest.approx(2.5)
    assert parts["loss"].item() == pytest.approx(0.5 * 0.75 + 2.0 * 2.5)


def test_zero_loss_when_student_matches_teacher() -> None:
    t = torch.randn(4, 5)
    assert HybridDistillLoss()(t.clone(), t).item() == pytest.approx(0.0)


def test_gradient_flows_to_student_only() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    HybridDistillLoss()(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_gradient_flows_into_a_model() -> None:
    lin = torch.nn.Linear(2, 1)
    x = torch.randn(6, 2)
    loss = HybridDistillLoss()(lin(x).view(2, 3), torch.randn(2, 3))
    loss.backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_shape_errors_are_clear() -> None:
    loss = HybridDistillLoss()
    with pytest.raises(ValueError, match=r"must be 2-D \(batch, group\)"):
        loss(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(2, 3\) and teacher scores \(2, 4\) must have the same"):
        loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="at least one negative"):
        loss(torch.zeros(2, 1), torch.zeros(2, 1))


def test_nan_and_inf_are_errors() -> None:
    loss = HybridDistillLoss()
    with pytest.raises(ValueError, match="teacher scores contain NaN or inf"):
        loss(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="student scores contain NaN or inf"):
        loss(torch.tensor([[float("inf"), 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="loss is not finite"):
        loss(torch.tensor([[1e30, -1e30]]), torch.zeros(1, 2))


def test_bad_weights_rejected() -> None:
    with pytest.raises(ConfigError, match="not all 0"):
        LossWeights(0.0, 0.0)
    with pytest.raises(ConfigError, match=">= 0"):
        LossWeights(-1.0, 1.0)
    with pytest.raises(ConfigError, match="listwise_temperature must be a positive number"):
        LossWeights(listwise_temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        ListwiseKLLoss(temperature=-1.0)


def test_listwise_kl_hand_computed() -> None:
    """One list of two: teacher softmax [e/(1+e), 1/(1+e)] vs student uniform [1/2, 1/2]."""
    import math

    p = math.e / (1 + math.e)
    expected = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert listwise_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(expected)
    # temperature 2 halves the teacher's logits and scales the KL by T^2 = 4
    p2 = math.exp(0.5) / (1 + math.exp(0.5))
    expected2 = 4 * (p2 * math.log(p2 / 0.5) + (1 - p2) * math.log((1 - p2) / 0.5))
    assert listwise_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), 2.0).item() == pytest.approx(expected2)


def test_listwise_kl_ignores_a_per_list_shift_and_averages_lists() -> None:
    t = torch.tensor([[2.0, 1.0, -1.0], [0.5, 0.0, 3.0]])
    assert listwise_kl(t + torch.tensor([[5.0], [-3.0]]), t).item() == pytest.approx(0.0, abs=1e-6)
    one = listwise_kl(torch.zeros(1, 3), t[:1]).item()
    two = listwise_kl(torch.zeros(1, 3), t[1:]).item()
    assert listwise_kl(torch.zeros(2, 3), t).item() == pytest.approx((one + two) / 2)
    assert one > 0 and two > 0


def test_listwise_loss_class_checks_and_gradient() -> None:
    loss = ListwiseKLLoss(temperature=1.0)
    student = torch.zeros(2, 4, requires_grad=True)
    teacher = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]], requires_grad=True)
    loss(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None
    assert student.grad[0, 0] < 0 and student.grad[1, 3] < 0  # raise the teacher's top of each list
    with pytest.raises(ValueError, match=r"\(2, 3\) and teacher scores \(2, 4\) must have the same"):
        loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="teacher scores contain NaN or inf"):
        loss(torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]))


def test_hybrid_adds_the_listwise_term_by_weight() -> None:
    student = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    teacher = torch.tensor([[2.0, 1.0], [1.0, -1.0]])
    parts = HybridDistillLoss(LossWeights(pointwise=0.5, margin=2.0, listwise=3.0,
                                          listwise_temperature=2.0)).components(student, teacher)
    assert parts["listwise"].item() == pytest.approx(listwise_kl(student, teacher, 2.0).item())
    assert parts["loss"].item() == pytest.approx(0.5 * 0.75 + 2.0 * 2.5 + 3.0 * parts["listwise"].item())
    only = HybridDistillLoss(LossWeights(pointwise=0.0, margin=0.0, listwise=1.0))
    assert only(student, teacher).item() == pytest.approx(listwise_kl(student, teacher).item())
    assert "listwise" not in HybridDistillLoss().components(student, teacher)
