"""Validation during training and the final evaluation of a model on a split."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from segkd.eval.inference import InferenceSpec, predict_logits
from segkd.eval.metrics import ConfusionMatrix, PerImageIoU


def _to_label_size(logits: torch.Tensor, hw: torch.Tensor, mask_hw: tuple[int, int]) -> torch.Tensor:
    """Upsample logits to each sample's label size; pad (never used: masked) to the batch's."""
    if bool((hw == hw[0]).all()):
        return F.interpolate(logits.float(), size=mask_hw, mode="bilinear", align_corners=False)
    out = logits.new_zeros((logits.shape[0], logits.shape[1], *mask_hw), dtype=torch.float32)
    for j, (h, w) in enumerate(hw.tolist()):
        out[j, :, :h, :w] = F.interpolate(logits[j:j + 1].float(), size=(h, w), mode="bilinear",
                                          align_corners=False)[0]
    return out


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], dict], loader, num_classes: int, ignore_index: int,
             device: torch.device, channels_last: bool = False, per_image: bool = True,
             reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             progress: Optional[Callable[[], None]] = None, counts: bool = False) -> dict:
    """Run ``forward(images) -> {"logits", "loss/...": ...}`` over ``loader``.

    Returns mIoU, per-class IoU, accuracies, optional per-image IoU and the mean of every
    ``loss/*`` entry. ``reduce`` sums tensors across processes (DDP); None = single process.
    ``counts``: also ``label_pixels`` / ``pred_pixels``, the labeled pixels per class in the
    labels and in the predictions (the confusion matrix's row and column sums).
    """
    cm = ConfusionMatrix(num_classes, ignore_index, device)
    pim = PerImageIoU(num_classes, ignore_index, device=device) if per_image else None
    sums: dict[str, torch.Tensor] = {}
    batches = torch.zeros((), device=device)
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        mask = batch["mask"].to(device, non_blocking=True)
        out = forward(images, mask)
        pred = _to_label_size(out["logits"], batch["hw"], tuple(mask.shape[-2:])).argmax(1)
        cm.update(pred, mask)
        if pim is not None:
            pim.update(pred, mask)
        for k, v in out.items():
            if k.startswith("loss"):
                sums[k] = sums.get(k, 0) + v.detach().float()
        batches += 1
        if progress:
            progress()
    if reduce is not None:
        cm.mat = reduce(cm.mat)
        batches = reduce(batches)
        sums = {k: reduce(v) for k, v in sums.items()}
        if pim is not None:
            pim.total, pim.count = reduce(pim.total), reduce(pim.count)
    metrics = cm.compute()
    if counts:
        metrics["label_pixels"] = cm.mat.sum(1).tolist()
        metrics["pred_pixels"] = cm.mat.sum(0).tolist()
    if pim is not None:
        metrics["per_image_iou"] = pim.compute()
    for k, v in sums.items():
        metrics[k] = float(v / batches.clamp(min=1))
    return metrics


def inference_forward(model: Callable[[torch.Tensor], Any], spec: InferenceSpec):
    """A ``forward`` for :func:`evaluate` using the configured inference mode (student only)."""
    def fwd(images: torch.Tensor, _mask) -> dict:
        return {"logits": predict_logits(model, images, spec)}
    return fwd
