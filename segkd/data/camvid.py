"""CamVid in two layouts: SegNet (11 classes + void) and fastai (32 codes, "camvid32")."""
from __future__ import annotations

from pathlib import Path

from segkd.data.base import (
    SegmentationDataset,
    Transform,
    build_lut,
    list_images,
    read_lines,
    require_dir,
    require_items,
)
from segkd.errors import DataError
from segkd.registry import DATASETS

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]
CAMVID_IGNORE = 11  # label value 11 = Unlabelled / void
CAMVID_MEAN = (0.4119, 0.4251, 0.4327)
CAMVID_STD = (0.2741, 0.2851, 0.2828)


def _paired(images: list[Path], mask_for: dict[str, Path], where: Path) -> list[tuple[Path, Path]]:
    """Pair each image with ``mask_for[image.stem]``; a missing mask is a DataError."""
    items = []
    for img in images:
        mask = mask_for.get(img.stem)
        if mask is None:
            raise DataError(f"no label for image {img} in {where}")
        items.append((img, mask))
    return items


@DATASETS.register("camvid")
def camvid(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    cache: bool = False,
) -> SegmentationDataset:
    """CamVid, SegNet layout: ``<root>/<split>/*.png`` with labels in ``<root>/<split>annot/``.

    480x360 images, label values 0..10 = the 11 classes, 11 = void (the ignore index).
    """
    root = require_dir(root, "CamVid root")
    img_dir = require_dir(root / split, f"CamVid split '{split}'")
    ann_dir = require_dir(root / f"{split}annot", f"CamVid labels of split '{split}'")
    masks = {p.stem: p for p in list_images(ann_dir)}
    items = require_items(_paired(list_images(img_dir), masks, ann_dir), img_dir)
    return SegmentationDataset(
        items=items, classes=CAMVID_CLASSES, ignore_index=CAMVID_IGNORE, mean=CAMVID_MEAN,
        std=CAMVID_STD, transform=transform, name=f"camvid/{split}", cache=cache,
    )


def _camvid32_classes(codes: list[str], ignore_index: int) -> tuple[list[str], dict[int, int]]:
    """Classes without "Void" and the raw code -> contiguous id map (Void -> ignore)."""
    classes, mapping = [], {}
    for raw, code in enumerate(codes):
        if code.lower() == "void":
            mapping[raw] = ignore_index
        else:
            mapping[raw] = len(classes)
            classes.append(code)
    return classes, mapping


@DATASETS.register("camvid32")
def camvid32(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    cache: bool = False,
) -> SegmentationDataset:
    """CamVid, fastai layout: ``images/``, ``labels/<stem>_P.png``, ``codes.txt``, ``valid.txt``.

    ``split="val"`` = the images listed in valid.txt, ``"train"`` = all others. The "Void" code
    maps to ignore index 255 and the remaining codes are renumbered contiguously.
    """
    root = require_dir(root, "CamVid (fastai) root")
    if split not in ("train", "val"):
        raise DataError(f"camvid32 split must be 'train' or 'val', got '{split}'")
    img_dir, lbl_dir = require_dir(root / "images"), require_dir(root / "labels")
    valid = {Path(n).name for n in read_lines(root / "valid.txt")}
    images = [p for p in list_images(img_dir) if (p.name in valid) == (split == "val")]
    masks = {p.stem[: -len("_P")]: p for p in list_images(lbl_dir) if p.stem.endswith("_P")}
    items = require_items(_paired(images, masks, lbl_dir), img_dir)
    classes, mapping = _camvid32_classes(read_lines(root / "codes.txt"), 255)
    return SegmentationDataset(
        items=items, classes=classes, ignore_index=255, mean=CAMVID_MEAN, std=CAMVID_STD,
        transform=transform, lut=build_lut(mapping, 255), name=f"camvid32/{split}", cache=cache,
    )
