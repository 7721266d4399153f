"""A deterministic in-memory street-like demo set (no files, no download).

Each scene: a sky/ground split at a random horizon, then poles, vehicles, signs and persons.
Colours of every region and object come from one shared grey-ish distribution, so colour alone
does not give the class: a disc above the horizon is a sign, below it a person; a thin tall bar
is a pole, a wide low box a vehicle; sky and ground differ only by position and texture.
Objects are striped, the image gets noise and a random brightness. Scene ``i`` of a split is
generated from ``crc32(seed, split, i)``, so train and val differ and every worker agrees.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch
from torch import Tensor

from segkd.core.errors import DataError
from segkd.data.base import SegmentationDataset
from segkd.data.spec import DatasetSpec, register_dataset

SYNTHETIC_CLASSES = ["background_sky", "ground", "pole", "vehicle", "sign", "person"]
SYNTHETIC_MEAN = (0.5, 0.5, 0.5)
SYNTHETIC_STD = (0.25, 0.25, 0.25)
SKY, GROUND, POLE, VEHICLE, SIGN, PERSON = range(6)


def scene_generator(seed: int, split: str, index: int) -> torch.Generator:
    """A torch Generator seeded stably (not with Python's salted hash) from the scene key."""
    key = zlib.crc32(f"segkd-synthetic/{seed}/{split}/{index}".encode())
    return torch.Generator().manual_seed(key)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _i(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi] (inclusive); ``lo`` if the range is empty."""
    return lo if hi <= lo else int(torch.randint(lo, hi + 1, (), generator=g))


def _colour(g: torch.Generator) -> Tensor:
    """An RGB colour [3,1,1] in 0..255 from the distribution shared by all classes."""
    grey = _u(g, 60, 200)
    return (grey + torch.randn(3, generator=g) * 25).view(3, 1, 1)


# Per-class texture: (stripe angle range in radians, period range in pixels, checker?). Colours
# come from one shared distribution, so a pixel's colour says nothing about its class: texture,
# shape and context (signs and persons share shape and texture; the horizon separates them) do.
_TEXTURE = {
    SKY: ((0.0, math.pi), (24.0, 40.0), False),
    GROUND: ((math.pi / 2 - 0.2, math.pi / 2 + 0.2), (4.0, 8.0), False),
    POLE: ((-0.2, 0.2), (2.0, 3.0), False),
    VEHICLE: ((0.0, math.pi / 2), (5.0, 9.0), True),
    SIGN: ((math.pi / 4 - 0.2, math.pi / 4 + 0.2), (3.0, 5.0), False),
    PERSON: ((math.pi / 4 - 0.2, math.pi / 4 + 0.2), (3.0, 5.0), False),
}


def _paint(img: Tensor, mask: Tensor, region: Tensor, cls: int, g: torch.Generator,
           yy: Tensor, xx: Tensor) -> None:
    """Fill ``region`` with the class's texture in a random colour and label it ``cls``."""
    (a0, a1), (p0, p1), checker = _TEXTURE[cls]
    angle, period = _u(g, a0, a1), _u(g, p0, p1)
    stripes = torch.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    if checker:
        stripes = torch.sign(stripes * torch.sin((-xx * math.sin(angle) + yy * math.cos(angle))
                                                 * 2 * math.pi / period))
    texture = _colour(g) + _u(g, 15, 35) * stripes
    img[:, region] = texture.expand_as(img)[:, region]
    mask[region] = cls


def _object_region(kind: int, horizon: int, h: int, w: int, g: torch.Generator,
                   yy: Tensor, xx: Tensor) -> Tensor:
    """Boolean [H,W] region of one object of class ``kind`` placed relative to the horizon."""
    if kind == POLE:  # thin bar crossing the horizon
        x0, bw = _i(g, 0, w - 5), _i(g, 2, 5)
        top, foot = _i(g, h // 10, max(h // 10, horizon - 4)), _i(g, horizon + 2, h - 1)
        return (xx >= x0) & (xx < x0 + bw) & (yy >= top) & (yy <= foot)
    if kind == VEHICLE:  # wide low box standing on the ground
        bw, bh = _i(g, w // 6, w // 3), _i(g, h // 8, h // 4)
        x0, y0 = _i(g, 0, w - bw), _i(g, horizon, max(horizon, h - bh))
        return (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
    r = _u(g, h / 16, h / 8)  # disc: above the horizon a sign, below it a person
    cy = _u(g, r, max(r, horizon - r)) if kind == SIGN else _u(g, horizon + r, max(horizon + r, h - r))
    cx = _u(g, r, w - r)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def render_scene(size: tuple[int, int], num_classes: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """One scene: image uint8 [3,H,W] and mask uint8 [H,W] of ids < num_classes."""
    h, w = size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    img, mask = torch.empty(3, h, w), torch.zeros(h, w, dtype=torch.uint8)
    horizon = _i(g, int(h * 0.3), int(h * 0.65))
    _paint(img, mask, yy < horizon, SKY, g, yy, xx)
    _paint(img, mask, yy >= horizon, GROUND, g, yy, xx)
    kinds = list(range(POLE, num_classes))
    for _ in range(_i(g, 3, 8) if kinds else 0):
        kind = kinds[_i(g, 0, len(kinds) - 1)]
        _paint(img, mask, _object_region(kind, horizon, h, w, g, yy, xx), kind, g, yy, xx)
    img = img * _u(g, 0.7, 1.3) + torch.randn(3, h, w, generator=g) * 8
    return img.clamp_(0, 255).round_().to(torch.uint8), mask


class SyntheticDataset(SegmentationDataset):
    """SegmentationDataset whose items are generated, not read (same transform/normalise path)."""

    def __init__(self, *, split: str, seed: int, size: tuple[int, int], **kw) -> None:
        super().__init__(**kw)
        self.split, self.seed, self.size = split, seed, (int(size[0]), int(size[1]))

    def _load(self, i: int) -> tuple[Tensor, Tensor]:
        index = int(self.items[i][0].name.rsplit("_", 1)[1])
        return render_scene(self.size, self.num_classes, scene_generator(self.seed, self.split, index))


def synthetic(
    root: str | Path | None = None,
    split: str = "train",
    num_images: int | None = None,
    size: tuple[int, int] = (96, 128),
    num_classes: int = 6,
    seed: int = 0,
) -> SegmentationDataset:
    """The synthetic demo set: ``num_images`` scenes (train 96, other splits 32) of (H, W) ``size``.

    ``root`` is ignored (nothing is read). ``num_classes`` in 2..6 keeps the first classes.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise DataError(f"synthetic: num_classes must be in 2..{len(SYNTHETIC_CLASSES)}, got {num_classes}")
    n = num_images if num_images is not None else (96 if split == "train" else 32)
    if n <= 0:
        raise DataError(f"synthetic: num_images must be positive, got {n}")
    items = [(Path(f"synthetic_{split}_{i:05d}"), None) for i in range(n)]
    return SyntheticDataset(
        split=split, seed=seed, size=size, items=items, classes=SYNTHETIC_CLASSES[:num_classes],
        ignore_index=255, mean=SYNTHETIC_MEAN, std=SYNTHETIC_STD, name=f"synthetic/{split}",
    )


register_dataset(DatasetSpec("synthetic", synthetic))
