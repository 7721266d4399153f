"""DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022):
inter- and intra-class Pearson correlation between class distributions."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import check_pair, fp32_forward, match_larger, require_teacher
from segkd.distill.losses.contract import Loss


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation of ``a, b [R, K]`` -> ``[R]`` (eps in the denominator)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(student: Tensor, teacher: Tensor, tau: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(inter, intra)`` relation losses, each ``1 - mean Pearson correlation``.

    ``p = softmax(logits / tau)`` over classes, reshaped to ``[N*H*W, C]``; inter-class correlates
    the rows (each pixel across classes), intra-class the columns (each class across pixels).

    Args:
        student, teacher: logits ``[N, C, H, W]`` of the same shape.
    Returns:
        two scalars in ``[0, 2]``.
    """
    c = teacher.shape[1]
    p_s = F.softmax(student / tau, dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    p_t = F.softmax(teacher / tau, dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    inter = 1.0 - pearson(p_s, p_t).mean()
    intra = 1.0 - pearson(p_s.t(), p_t.t()).mean()
    return inter, intra


def dist_loss(
    student: Tensor, teacher: Tensor, tau: float = 1.0, beta: float = 1.0, gamma: float = 1.0
) -> Tensor:
    """``tau^2 * (beta * inter + gamma * intra)`` (see :func:`dist_terms`); scalar."""
    inter, intra = dist_terms(student, teacher, tau)
    return tau**2 * (beta * inter + gamma * intra)


@LOSSES.register("dist")
class DIST(Loss):
    """DIST on logits; logits of different sizes: the smaller is upsampled to the larger."""

    def __init__(self, tau: float = 1.0, beta: float = 1.0, gamma: float = 1.0) -> None:
        super().__init__()
        self.tau, self.beta, self.gamma = tau, beta, gamma

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("dist", teacher)
        check_pair("dist", student, teacher)
        student, teacher = match_larger(student, teacher)
        return dist_loss(student, teacher, self.tau, self.beta, self.gamma)
