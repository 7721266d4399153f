"""Channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021)."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import check_pair, fp32_forward, require_teacher, resize
from segkd.distill.losses.contract import Loss


def channel_wise_kd(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """``tau^2 / (N*C) * sum_{n,c} KL(softmax_hw(t_nc/tau) || softmax_hw(s_nc/tau))``.

    Each channel is turned into a distribution over its spatial positions.

    Args:
        student, teacher: ``[N, C, H, W]`` of the same shape (logits or features).
    Returns:
        scalar; 0 when student == teacher.
    """
    n, c = teacher.shape[:2]
    log_ps = F.log_softmax(student.flatten(2) / tau, dim=2)
    log_pt = F.log_softmax(teacher.flatten(2) / tau, dim=2)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum()
    return tau**2 * kl / (n * c)


@LOSSES.register("cwd")
class ChannelWiseDistillation(Loss):
    """CWD; the student is resized (bilinear) to the teacher's size; channels must match."""

    def __init__(self, tau: float = 1.0) -> None:
        super().__init__()
        self.tau = tau

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("cwd", teacher)
        check_pair("cwd", student, teacher)
        return channel_wise_kd(resize(student, teacher.shape[-2:]), teacher, self.tau)
