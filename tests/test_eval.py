"""Metrics against hand-computed values; inference modes agree where they must."""
from __future__ import annotations

import pytest
import torch

from segkd.eval import ConfusionMatrix, InferenceSpec, PerImageIoU, predict_logits


def test_confusion_matrix_miou_by_hand():
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 1]]])
    cm = ConfusionMatrix(3, 255)
    cm.update(pred, target)
    m = cm.compute()
    # class 0: tp 1, fp 1 (pixel of class 2), fn 1 -> 1/3; class 1: tp 3, fp 1, fn 0 -> 3/4;
    # class 2: tp 1, fn 1 -> 1/2; the ignored pixel (255) counts nowhere
    assert m["per_class_iou"] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert m["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert m["pixel_acc"] == pytest.approx(5 / 7)


def test_absent_class_is_excluded_from_miou_but_scores_one_per_image():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.zeros(1, 2, 2, dtype=torch.long)
    cm = ConfusionMatrix(3, 255)
    cm.update(pred, target)
    assert cm.compute()["mIoU"] == 1.0 and cm.compute()["per_class_iou"][1] is None
    pim = PerImageIoU(3, 255)
    pim.update(pred, target)
    assert pim.compute() == pytest.approx(1.0)  # kdsemseg: absent classes score 1
    pim = PerImageIoU(3, 255)
    pim.update(torch.ones(1, 2, 2, dtype=torch.long), target)  # all wrong
    assert pim.compute() == pytest.approx(1 / 3, abs=1e-5)  # class 2 absent from both -> 1


class _Pointwise(torch.nn.Module):
    """A 1x1 conv: translation-equivariant, so sliding windows must equal the whole image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


def test_sliding_and_flip_agree_with_whole_for_a_pointwise_model():
    m = _Pointwise().eval()
    x = torch.randn(2, 3, 45, 70)
    whole = predict_logits(m, x, InferenceSpec(stride=1))
    slide = predict_logits(m, x, InferenceSpec(stride=1, sliding_crop=(20, 32), overlap=1 / 3))
    flip = predict_logits(m, x, InferenceSpec(stride=1, flip=True))
    assert torch.allclose(whole, slide, atol=1e-5) and torch.allclose(whole, flip, atol=1e-5)
    assert predict_logits(m, x, InferenceSpec(scales=[0.5, 1.0]), out_size=(45, 70)).shape == (2, 4, 45, 70)


def test_whole_image_pads_to_the_stride_and_crops_back():
    seen = []

    def model(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    out = predict_logits(model, torch.zeros(1, 3, 45, 70), InferenceSpec(stride=32))
    assert seen == [(64, 96)] and out.shape == (1, 2, 45, 70)
