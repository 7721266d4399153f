"""Segmentation metrics.

Standard (dataset-level) mIoU comes from ONE confusion matrix accumulated over the whole split:
IoU_c = TP_c / (TP_c + FP_c + FN_c); mIoU = mean over classes present in labels or predictions.
kdsemseg's number is different: per image, the mean over classes of (I + eps) / (U + eps)
(a class absent from both scores 1), then averaged over images. segkd reports it as
``per_image_iou`` for comparison with that seed's tables only.
"""
from __future__ import annotations

import torch


class ConfusionMatrix:
    """Accumulates a ``[C, C]`` (label, prediction) matrix on the device, no host syncs."""

    def __init__(self, num_classes: int, ignore_index: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: int ``[N, H, W]``; ``target == ignore_index`` (or out of range) skipped."""
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        idx = target[valid] * self.num_classes + pred[valid]
        self.mat += torch.bincount(idx, minlength=self.num_classes ** 2).view_as(self.mat)

    def compute(self) -> dict:
        return metrics_from_confusion(self.mat)


def metrics_from_confusion(mat: torch.Tensor) -> dict:
    """mIoU, per-class IoU, pixel accuracy and mean class accuracy from a confusion matrix."""
    mat = mat.double().cpu()
    tp = mat.diag()
    label_count = mat.sum(1)
    pred_count = mat.sum(0)
    union = label_count + pred_count - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    acc = torch.where(label_count > 0, tp / label_count.clamp(min=1), torch.full_like(tp, float("nan")))
    present = ~torch.isnan(iou)
    return {
        "mIoU": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_acc": float(tp.sum() / mat.sum().clamp(min=1)),
        "mean_acc": float(acc[~torch.isnan(acc)].mean()) if (~torch.isnan(acc)).any() else 0.0,
        "per_class_iou": [None if torch.isnan(v) else float(v) for v in iou],
    }


class PerImageIoU:
    """kdsemseg's per-image IoU: mean over classes of (I+eps)/(U+eps), averaged over images."""

    def __init__(self, num_classes: int, ignore_index: int, eps: float = 1e-6,
                 device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.eps = eps
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        classes = torch.arange(self.num_classes, device=pred.device).view(1, -1, 1)
        p = (pred.flatten(1).unsqueeze(1) == classes) & valid.flatten(1).unsqueeze(1)
        t = (target.flatten(1).unsqueeze(1) == classes) & valid.flatten(1).unsqueeze(1)
        inter = (p & t).sum(-1).double()
        union = (p | t).sum(-1).double()
        per_image = ((inter + self.eps) / (union + self.eps)).mean(1)
        self.total += per_image.sum()
        self.count += per_image.numel()

    def compute(self) -> float:
        return float(self.total / self.count.clamp(min=1))
