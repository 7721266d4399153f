"""Pixel-wise knowledge distillation on logits (Hinton et al. 2015, applied per pixel)."""
from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import (
    LossInputError,
    check_pair,
    fp32_forward,
    masked_mean,
    match_larger,
    require_teacher,
    valid_mask,
)
from segkd.distill.losses.contract import Loss


def pixel_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-pixel ``KL(softmax(t/T) || softmax(s/T))`` summed over classes (NOT divided by C).

    Args:
        student, teacher: logits ``[N, C, H, W]`` of the same shape.
    Returns:
        ``[N, H, W]``.
    """
    log_ps = F.log_softmax(student / temperature, dim=1)
    log_pt = F.log_softmax(teacher / temperature, dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)


def pixel_kd(
    student: Tensor, teacher: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """``T^2 * mean over (masked) pixels of KL(p_t || p_s)``.

    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015; the pixel-wise
    form as in Liu et al., "Structured Knowledge Distillation for Semantic Segmentation",
    CVPR 2019.

    Args:
        student, teacher: logits ``[N, C, H, W]``.
        mask: optional bool ``[N, H, W]``, True where a pixel counts.
    Returns:
        scalar (0 if the mask is empty).
    """
    return temperature**2 * masked_mean(pixel_kl(student, teacher, temperature), mask)


IGNORED_PIXELS = ("exclude", "include")


@LOSSES.register("kd")
class PixelKD(Loss):
    """Pixel KD, T^2 KL(p_t || p_s) per pixel; ignore_pixels: exclude (default) | include.

    ``exclude`` (default): pixels labelled ``ignore_index`` in ``extra['target']`` are left out
    of the mean (they carry no label, and a teacher's answer there is unchecked).
    ``include``: the mean over every pixel, as the original codes do (CIRKD's CriterionKD,
    ``kl_div(..., 'batchmean')`` over all N*H*W pixels; the SKD authors' pixel term sums over
    every pixel too), whatever the pixel's label.
    Logits of different sizes: the smaller is upsampled (bilinear) to the larger."""

    def __init__(self, temperature: float = 1.0, ignore_index: int = 255,
                 ignore_pixels: Literal["exclude", "include"] = "exclude") -> None:
        super().__init__()
        if ignore_pixels not in IGNORED_PIXELS:
            raise LossInputError(f"loss 'kd': ignore_pixels must be one of {IGNORED_PIXELS}, "
                                 f"got '{ignore_pixels}'")
        self.temperature = temperature
        self.ignore_index = ignore_index
        self.ignore_pixels = ignore_pixels

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("kd", teacher)
        check_pair("kd", student, teacher)
        student, teacher = match_larger(student, teacher)
        mask = None
        if self.ignore_pixels == "exclude":
            ignore = int(extra.get("ignore_index", self.ignore_index))
            mask = valid_mask(extra.get("target"), ignore, student.shape[-2:], student.shape[0])
        return pixel_kd(student, teacher, self.temperature, mask)
