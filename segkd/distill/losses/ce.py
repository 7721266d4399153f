"""Cross-entropy with the labels (the supervised term; no teacher)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import LossInputError, check_4d, fp32_forward, resize
from segkd.distill.losses.contract import Loss


def check_labels(target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise a clear error if a label other than ``ignore_index`` is outside [0, C).

    Skipped on accelerators, where it would cost a host sync per step: there the datasets
    have already checked every mask when it was decoded.
    """
    if target.device.type != "cpu":
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad])[:8].tolist()
        raise LossInputError(
            f"loss 'ce': label values {values} are outside [0, {num_classes}) and are not "
            f"ignore_index={ignore_index}; check the dataset's class count / label mapping"
        )


def segmentation_ce(
    logits: Tensor, target: Tensor, ignore_index: int = 255, label_smoothing: float = 0.0
) -> Tensor:
    """Mean pixel cross-entropy over labelled pixels.

    Args:
        logits: ``[N, C, h, w]``; upsampled (bilinear, align_corners=False) to the label size.
        target: int64 ``[N, H, W]``; ``ignore_index`` marks unlabelled pixels.
    Returns:
        scalar; 0 (still attached to the graph) when no pixel is labelled.
    """
    if target.dim() != 3 or target.shape[0] != logits.shape[0]:
        raise LossInputError(
            f"loss 'ce': target must be [N, H, W] with N={logits.shape[0]}, "
            f"got {tuple(target.shape)}"
        )
    logits = resize(logits, target.shape[-2:])
    target = target.long()
    check_labels(target, logits.shape[1], ignore_index)
    total = F.cross_entropy(
        logits, target, ignore_index=ignore_index, reduction="sum",
        label_smoothing=label_smoothing,
    )
    return total / (target != ignore_index).sum().clamp(min=1)


@LOSSES.register("ce")
class CrossEntropy(Loss):
    """Pixel cross-entropy; ``extra['ignore_index']`` overrides the constructor's."""

    needs_teacher = False  # the supervised term: a term's `teacher:` is ignored
    needs_target = True

    def __init__(self, ignore_index: int = 255, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        check_4d("ce", student=student)
        target = extra.get("target")
        if target is None:
            raise LossInputError("loss 'ce' needs labels: pass target=[N, H, W]")
        ignore = int(extra.get("ignore_index", self.ignore_index))
        return segmentation_ce(student, target, ignore, self.label_smoothing)
