"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017)."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import check_pair, fp32_forward, require_teacher, resize
from segkd.distill.losses.contract import Loss


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention ``A = mean over channels of |F|^p``.

    Args:
        feature: ``[N, C, H, W]``.
    Returns:
        ``[N, 1, H, W]`` (not normalised).
    """
    a = feature.pow(2) if p == 2 else feature.abs().pow(p)
    return a.mean(dim=1, keepdim=True)


def attention_transfer(student: Tensor, teacher: Tensor, p: float = 2.0) -> Tensor:
    """``mean((A_s - A_t)^2)`` with each ``A`` flattened per sample and L2-normalised.

    Channels may differ. The student's attention map is resized (bilinear) to the teacher's
    spatial size when they differ.

    Args:
        student: ``[N, Cs, Hs, Ws]``; teacher: ``[N, Ct, H, W]``.
    Returns:
        scalar.
    """
    a_s = resize(attention_map(student, p), teacher.shape[-2:]).flatten(1)
    a_t = attention_map(teacher, p).flatten(1)
    return (F.normalize(a_s, dim=1) - F.normalize(a_t, dim=1)).pow(2).mean()


@LOSSES.register("at")
class AttentionTransfer(Loss):
    """AT loss between two feature maps (no connector needed)."""

    def __init__(self, p: float = 2.0) -> None:
        super().__init__()
        self.p = p

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("at", teacher)
        check_pair("at", student, teacher, same_channels=False)
        return attention_transfer(student, teacher, self.p)
