"""Joint transforms: same geometry for image and mask, nearest-only masks, ignore padding."""
import pytest
import torch
from torchvision import tv_tensors

from segkd.data.transforms import JointRandomScale, build_transforms

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

IGNORE = 255


def _pair(h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
    mask = tv_tensors.Mask((torch.rand(h, w, generator=g) > 0.5).to(torch.uint8) * 5)
    return image, mask


def test_train_masks_keep_only_original_values_and_ignore():
    t = build_transforms(train=True, size=(20, 30), scale=(0.5, 2.0), crop=(32, 32), hflip=True,
                         color_jitter=0.4, blur=1.0, ignore_index=IGNORE)
    torch.manual_seed(0)
    for seed in range(20):
        image, mask = t(*_pair(seed=seed))
        assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert mask.shape == (32, 32)
        assert set(mask.unique().tolist()) <= {0, 5, IGNORE}


def test_crop_pads_mask_with_ignore_and_image_with_zero():
    t = build_transforms(train=True, crop=(40, 50), hflip=False, ignore_index=IGNORE)
    image, mask = _pair(24, 32)
    out_img, out_mask = t(tv_tensors.Image(torch.full_like(image, 200)), mask)
    padded = out_mask == IGNORE
    assert int(padded.sum()) == 40 * 50 - 24 * 32
    assert torch.all(out_img[:, padded] == 0)
    assert torch.all(out_img[:, ~padded] > 0.7)


def test_image_and_mask_get_same_geometry():
    # The mask is a copy of the image's first channel: after flip/scale/crop they still agree.
    image = torch.zeros(3, 24, 32, dtype=torch.uint8)
    image[:, :, :10] = 255  # left band
    mask = (image[0] > 0).to(torch.uint8)
    t = build_transforms(train=True, scale=(0.75, 1.5), crop=(20, 20), hflip=True, ignore_index=IGNORE)
    torch.manual_seed(1)
    for _ in range(20):
        out_img, out_mask = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
        valid = out_mask != IGNORE
        bright = out_img[0] > 0.5
        agree = (bright == (out_mask == 1))[valid].float().mean()
        assert agree > 0.9


def test_random_scale_relative_to_base_size_and_nearest():
    s = JointRandomScale((2.0, 2.0), base_size=(10, 20))
    image, mask = _pair(24, 32)
    out_img, out_mask = s(image, mask)
    assert out_img.shape[-2:] == (20, 40) and out_mask.shape == (20, 40)
    assert set(out_mask.unique().tolist()) <= {0, 5}


def test_eval_resizes_only_and_is_deterministic():
    t = build_transforms(train=False, size=(12, 16), crop=(8, 8), hflip=True, color_jitter=0.5)
    image, mask = _pair()
    a, b = t(image, mask), t(image, mask)
    assert a[0].shape == (3, 12, 16) and a[1].shape == (12, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].unique().tolist()) <= {0, 5}
    image2, mask2 = build_transforms(train=False)(image, mask)
    assert torch.equal(mask2, mask) and torch.allclose(image2 * 255, image.float())
