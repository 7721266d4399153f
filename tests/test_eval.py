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


def _crop_mean(x: torch.Tensor) -> torch.Tensor:
    """Not pointwise: every output pixel is the mean of the whole input (its crop) -> [N, 2, H, W]."""
    m = x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
    return torch.cat([m, -m], dim=1)


def test_sliding_window_averages_the_crops_covering_each_pixel():
    x = torch.randn(2, 3, 45, 70)
    slide = predict_logits(_crop_mean, x, InferenceSpec(stride=1, sliding_crop=(20, 32), overlap=1 / 3))
    # windows by hand: steps floor(20 * 2/3) = 13 and floor(32 * 2/3) = 21, the last window of a
    # row/column moved back to end at the border (45 - 20 = 25, 70 - 32 = 38)
    rows, cols = (0, 13, 25), (0, 21, 38)

    def window_mean(y0, x0):
        return x[:, :, y0:y0 + 20, x0:x0 + 32].mean(dim=(1, 2, 3))

    torch.testing.assert_close(slide[:, 0, 0, 0], window_mean(0, 0))  # one window covers it
    torch.testing.assert_close(slide[:, 0, 44, 69], window_mean(25, 38))
    four = sum(window_mean(y, c) for y in (0, 13) for c in (0, 21)) / 4  # (15, 25): 4 windows
    torch.testing.assert_close(slide[:, 0, 15, 25], four)
    total, count = torch.zeros(2, 45, 70), torch.zeros(45, 70)
    for y in rows:
        for c in cols:
            total[:, y:y + 20, c:c + 32] += window_mean(y, c).view(-1, 1, 1)
            count[y:y + 20, c:c + 32] += 1
    assert int(count.min()) == 1 and int(count.max()) == 4
    torch.testing.assert_close(slide[:, 0], total / count)
    torch.testing.assert_close(slide[:, 1], -total / count)
    assert not torch.allclose(slide, predict_logits(_crop_mean, x, InferenceSpec(stride=1)))


def _ramp_model(x: torch.Tensor) -> torch.Tensor:
    """A fixed 1x1 conv plus a left-to-right ramp: flipping the input does not flip the ramp."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 1)
    w = x.shape[-1]
    ramp = torch.arange(w, dtype=x.dtype) / w * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    return conv(x) + ramp


def test_flip_averages_the_prediction_of_the_mirrored_image_mirrored_back():
    x = torch.randn(2, 3, 8, 11)
    plain = predict_logits(_ramp_model, x, InferenceSpec(stride=1))
    flip = predict_logits(_ramp_model, x, InferenceSpec(stride=1, flip=True))
    ramp = torch.arange(11.0) / 11 * torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    # conv(x) is pointwise, so mirrored back it is conv(x) again; the ramp comes back reversed
    expected = plain - ramp + (ramp + ramp.flip(-1)) / 2
    torch.testing.assert_close(flip, expected)
    assert not torch.allclose(flip, plain, atol=1e-3)


def _width(x: torch.Tensor) -> torch.Tensor:
    """Logits equal to the width of the input the model saw: which scale ran, and how often."""
    return x.new_full((x.shape[0], 2, *x.shape[-2:]), float(x.shape[-1]))


@pytest.mark.parametrize("flip", [False, True])
def test_multi_scale_averages_each_scale_resized_back(flip):
    x = torch.randn(1, 3, 45, 70)
    spec = InferenceSpec(stride=1, scales=[0.5, 0.75, 1.0], flip=flip)
    out = predict_logits(_width, x, spec, out_size=(45, 70))
    # widths seen: floor(70 * 0.5) = 35, floor(70 * 0.75) = 52, 70; each output resized to
    # 45x70, then averaged (an unscaled run would give 70)
    torch.testing.assert_close(out, torch.full((1, 2, 45, 70), (35 + 52 + 70) / 3))


def test_whole_image_pads_to_the_stride_and_crops_back():
    seen = []

    def model(x):
        seen.append(tuple(x.shape[-2:]))
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    out = predict_logits(model, torch.zeros(1, 3, 45, 70), InferenceSpec(stride=32))
    assert seen == [(64, 96)] and out.shape == (1, 2, 45, 70)
