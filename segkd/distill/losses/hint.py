"""Feature hints: mean-squared error between feature maps.

FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015); also the stagewise
feature loss of kdsemseg and the hint loss of Plug-and-Play block replacement.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import check_pair, fp32_forward, require_teacher, resize
from segkd.distill.losses.contract import Loss


def standardize_channels(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise each channel of each sample over its spatial positions.

    Args:
        x: ``[N, C, H, W]``.
    Returns:
        ``[N, C, H, W]`` with zero mean and unit (biased) variance per ``(n, c)``.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt()


def feature_mse(student: Tensor, teacher: Tensor, normalize: bool = False) -> Tensor:
    """Mean squared error; the student is resized (bilinear) to the teacher's size if needed.

    Args:
        student, teacher: ``[N, C, H, W]`` (same N and C).
        normalize: standardise both per channel first (see :func:`standardize_channels`).
    Returns:
        scalar.
    """
    student = resize(student, teacher.shape[-2:])
    if normalize:
        student, teacher = standardize_channels(student), standardize_channels(teacher)
    return F.mse_loss(student, teacher)


@LOSSES.register("mse")
class FeatureMSE(Loss):
    """MSE between student and teacher features; also registered as 'hint' and 'fitnet'."""

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("mse", teacher)
        check_pair("mse", student, teacher)
        return feature_mse(student, teacher, self.normalize)


LOSSES.register("hint", obj=FeatureMSE)
LOSSES.register("fitnet", obj=FeatureMSE)
