"""Cityscapes fine annotations: labelIds -> the 19 standard train ids (others ignored)."""
from __future__ import annotations

from pathlib import Path

from segkd.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    Transform,
    build_lut,
    require_dir,
    require_items,
)
from segkd.errors import DataError
from segkd.registry import DATASETS

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]
# Train id t is label id CITYSCAPES_TRAINID_TO_LABELID[t] (for writing benchmark submissions).
CITYSCAPES_TRAINID_TO_LABELID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_LABELID_TO_TRAINID = {lid: t for t, lid in enumerate(CITYSCAPES_TRAINID_TO_LABELID)}
CITYSCAPES_IGNORE = 255
_IMG_SUFFIX = "_leftImg8bit.png"
_GT_SUFFIX = "_gtFine_labelIds.png"


def _items(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, labelIds) pairs of every city of ``split``; a missing label is a DataError."""
    img_root = require_dir(root / "leftImg8bit" / split, f"Cityscapes split '{split}'")
    gt_root = require_dir(root / "gtFine" / split, f"Cityscapes gtFine split '{split}'")
    items = []
    for img in sorted(img_root.glob(f"*/*{_IMG_SUFFIX}")):
        prefix = img.name[: -len(_IMG_SUFFIX)]
        gt = gt_root / img.parent.name / f"{prefix}{_GT_SUFFIX}"
        if not gt.is_file():
            raise DataError(f"no label for image {img}: expected {gt}")
        items.append((img, gt))
    return require_items(items, img_root)


@DATASETS.register("cityscapes")
def cityscapes(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    cache: bool = False,
) -> SegmentationDataset:
    """Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; 19 train ids, everything else 255."""
    root = require_dir(root, "Cityscapes root")
    return SegmentationDataset(
        items=_items(root, split), classes=CITYSCAPES_CLASSES, ignore_index=CITYSCAPES_IGNORE,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, transform=transform,
        lut=build_lut(CITYSCAPES_LABELID_TO_TRAINID, CITYSCAPES_IGNORE),
        name=f"cityscapes/{split}", cache=cache,
    )
