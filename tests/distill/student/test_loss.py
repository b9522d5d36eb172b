from __future__ import annotations

import pytest
import torch

from distill.student.loss import HybridDistillLoss, LossWeights, margin_mse, pointwise_mse


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
    with pytest.raises(ValueError, match="not both 0"):
        LossWeights(0.0, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(-1.0, 1.0)
