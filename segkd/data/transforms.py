"""Joint image/mask transforms on torchvision.transforms.v2.

Every transform gets ``(tv_tensors.Image uint8 [3,H,W], tv_tensors.Mask [H,W])`` together, so
both see the same geometry. v2 resizes ``Mask`` with NEAREST only and leaves it alone in colour
transforms and blur; crops pad the mask with ``ignore_index`` and the image with 0. Images stay
uint8 through the geometry and become float32 in [0, 1] at the very end; the dataset then
normalises them with its mean/std.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

JointTransform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Tensor, Tensor]]


class JointRandomScale:
    """Resize image and mask by one random factor in ``scale`` (uniform).

    The factor applies to ``base_size`` (H, W) when given, otherwise to the input's own size.
    The image is resized bilinear (antialiased), the mask nearest.
    """

    def __init__(self, scale: tuple[float, float], base_size: tuple[int, int] | None = None):
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < min <= max, got {scale}")
        self.scale, self.base_size = (lo, hi), base_size

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * float(torch.rand(()))
        h, w = self.base_size or tuple(image.shape[-2:])
        size = [max(1, int(round(h * s))), max(1, int(round(w * s)))]
        image = F.resize(image, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
        mask = F.resize(mask, size, interpolation=v2.InterpolationMode.NEAREST)
        return image, mask

    def __repr__(self) -> str:
        return f"JointRandomScale(scale={self.scale}, base_size={self.base_size})"


class RandomHFlip:
    """Flip image and mask horizontally with probability ``p``; ``flipped`` tells what the last
    call did (the teacher cache looks up the view of a sample by it).

    Draws its random number as ``v2.RandomHorizontalFlip`` does (``torch.rand(1) >= p``: no
    flip), so a pipeline gives the same samples with either. ``force`` (True/False) overrides
    the draw without consuming random numbers (the cache builds each view with it).
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p, self.flipped, self.force = float(p), False, None

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        self.flipped = bool(self.force) if self.force is not None else bool(torch.rand(1) < self.p)
        if self.flipped:
            image, mask = F.horizontal_flip(image), F.horizontal_flip(mask)
        return image, mask

    def __repr__(self) -> str:
        return f"RandomHFlip(p={self.p})"


class JointRandomCrop(v2.RandomCrop):
    """``v2.RandomCrop`` (the same draws) that records where its last crop lay: ``window`` =
    (top, left, height, width) in its input's pixels (negative: in the padding) and the input
    (height, width): the approximate teacher cache maps the teacher's output with it."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        from torchvision.transforms.v2._utils import query_size

        params = super().make_params(flat_inputs)
        pad_left, pad_top = params["padding"][0], params["padding"][1]
        self.window = (params["top"] - pad_top, params["left"] - pad_left, params["height"],
                       params["width"], *query_size(flat_inputs))
        return params


class ImageToFloat:
    """Last step: image uint8 -> float32 in [0, 1]; the mask passes unchanged."""

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return F.to_dtype(image, torch.float32, scale=True), mask

    def __repr__(self) -> str:
        return "ImageToFloat()"


def _resize(size: tuple[int, int]) -> v2.Transform:
    """Fixed (H, W) resize: bilinear antialiased image, nearest mask (v2 does masks nearest)."""
    return v2.Resize(list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)


def _train_steps(
    scale: tuple[float, float] | None,
    base_size: tuple[int, int] | None,
    crop: tuple[int, int] | None,
    hflip: bool,
    color_jitter: float,
    blur: float,
    ignore_index: int,
) -> list[Callable]:
    """The random steps of a training pipeline, in order (geometry first, then colour)."""
    steps: list[Callable] = []
    if scale is not None:
        steps.append(JointRandomScale(scale, base_size))
    if crop is not None:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
        steps.append(JointRandomCrop(list(crop), pad_if_needed=True, fill=fill))
    if hflip:
        steps.append(RandomHFlip(0.5))
    if color_jitter > 0:
        cj = float(color_jitter)
        steps.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
    if blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=float(blur)))
    return steps


def split_transforms(train: bool, size: tuple[int, int] | None = None,
                     **steps: Any) -> tuple[v2.Transform | None, JointTransform]:
    """:func:`build_transforms` as ``(prepare, rest)``: the fixed resize, deterministic and so
    cacheable with the decoded item, and everything after it (``steps``: the other keyword
    arguments of :func:`build_transforms`). ``rest(prepare(x))`` equals
    ``build_transforms(train, size, **steps)(x)`` for the same random state."""
    if "base_size" in steps:
        raise TypeError("split_transforms: the scale reference is the resize size")
    prepare = _resize(size) if size is not None else None
    return prepare, build_transforms(train, None, base_size=size, **steps)


def build_transforms(
    train: bool,
    size: tuple[int, int] | None = None,
    scale: tuple[float, float] | None = None,
    crop: tuple[int, int] | None = None,
    hflip: bool = True,
    color_jitter: float = 0.0,
    blur: float = 0.0,
    ignore_index: int = 255,
    base_size: tuple[int, int] | None = None,
) -> JointTransform:
    """Build a joint transform ``(image, mask) -> (image float32 [3,h,w] in 0..1, mask [h,w])``.

    Args:
        train: random augmentation when True; evaluation applies only ``size``.
        size: (H, W) fixed resize applied first (None keeps the input size).
        scale: random scale range (min, max) relative to ``base_size``, else to ``size``,
            else to the input size.
        crop: (H, W) random crop; smaller inputs are padded (image 0, mask ``ignore_index``).
        hflip: random horizontal flip with probability 0.5.
        color_jitter: brightness/contrast/saturation jitter strength (0 = off).
        blur: probability of a Gaussian blur of the image (0 = off).
        ignore_index: mask value used for padding.
        base_size: (H, W) reference size for ``scale``.
    """
    steps: list[Callable] = [_resize(size)] if size is not None else []
    if train:
        base = base_size or size
        steps += _train_steps(scale, base, crop, hflip, color_jitter, blur, ignore_index)
    steps.append(ImageToFloat())
    return v2.Compose(steps)



class EvalResize:
    """Evaluation transform: resize the IMAGE to ``size`` (H, W); the mask keeps its original
    size, so metrics are computed at label resolution (logits are upsampled to it)."""

    def __init__(self, size: Optional[tuple[int, int]]) -> None:
        self.size = size

    def __call__(self, image, mask):
        if self.size is not None and tuple(image.shape[-2:]) != tuple(self.size):
            image = F.resize(image, list(self.size), antialias=True)
        return image, mask  # uint8 stays uint8 (4x less to cache); normalize() scales it


# ----------------------------------------------------------------------------- what a sample's view was
def transform_steps(transform) -> list:
    """The steps of a (composed) transform, in order; [] for None."""
    if transform is None:
        return []
    return list(getattr(transform, "transforms", [transform]))


def find_flip(transform) -> Optional[RandomHFlip]:
    """The random horizontal flip of a training transform (None without one)."""
    return next((s for s in transform_steps(transform) if isinstance(s, RandomHFlip)), None)


class ViewTags:
    """Tells what the random steps of ``transform`` did to the last sample: ``view`` (1 when
    flipped) and, after a crop, ``window``: the crop in the prepared image's normalised
    coordinates (y0, y1, x0, x1), -1..1 edge to edge (a scale does not change them). The
    teacher cache looks a sample's teacher outputs up by them."""

    def __init__(self, transform) -> None:
        self.flip = find_flip(transform)
        self.crop = next((s for s in transform_steps(transform) if isinstance(s, JointRandomCrop)), None)

    def __call__(self) -> dict:
        out = {"view": int(self.flip is not None and self.flip.flipped)}
        if self.crop is not None and getattr(self.crop, "window", None) is not None:
            top, left, h, w, H, W = self.crop.window
            out["window"] = (2 * top / H - 1, 2 * (top + h) / H - 1,
                             2 * left / W - 1, 2 * (left + w) / W - 1)
        return out
