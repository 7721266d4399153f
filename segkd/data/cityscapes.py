"""Cityscapes fine annotations: labelIds -> the 19 standard train ids (others ignored)."""
from __future__ import annotations

from pathlib import Path

from segkd.core.errors import DataError
from segkd.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    build_lut,
    require_dir,
    require_items,
)
from segkd.data.pairing import LayoutMeta, Pairing, match
from segkd.data.spec import DatasetSpec, Download, register_dataset

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
CITYSCAPES_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")


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


def cityscapes(root: str | Path, split: str = "train") -> SegmentationDataset:
    """Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; 19 train ids, everything else 255."""
    root = require_dir(root, "Cityscapes root")
    return SegmentationDataset(
        items=_items(root, split), classes=CITYSCAPES_CLASSES, ignore_index=CITYSCAPES_IGNORE,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        lut=build_lut(CITYSCAPES_LABELID_TO_TRAINID, CITYSCAPES_IGNORE), name=f"cityscapes/{split}",
    )


def scan_cityscapes(root: Path, options: dict) -> dict[str, Pairing]:
    """Every split folder of ``leftImg8bit/``, paired with ``gtFine/`` by city and frame."""
    def keyed(folder: Path, suffix: str) -> dict[str, Path]:
        return {f"{p.parent.name}/{p.name[: -len(suffix)]}": p for p in folder.glob(f"*/*{suffix}")}
    img_root = root / "leftImg8bit"
    splits = sorted(d.name for d in img_root.iterdir() if d.is_dir()) if img_root.is_dir() else []
    return {s: match(keyed(img_root / s, _IMG_SUFFIX), keyed(root / "gtFine" / s, _GT_SUFFIX))
            for s in splits}


def cityscapes_meta(root: Path, options: dict) -> LayoutMeta:
    lut = build_lut(CITYSCAPES_LABELID_TO_TRAINID, CITYSCAPES_IGNORE)
    return LayoutMeta(list(CITYSCAPES_CLASSES), CITYSCAPES_IGNORE, lut.numpy())


def cityscapes_instructions(root: Path) -> str:
    """What to download by hand for Cityscapes and where to put it."""
    return (
        "Cityscapes needs a (free) account, so segkd cannot download it for you:\n"
        "  1. register / log in at https://www.cityscapes-dataset.com/login/\n"
        "  2. from https://www.cityscapes-dataset.com/downloads/ fetch\n"
        "       leftImg8bit_trainvaltest.zip  (11 GB, packageID=3)\n"
        "       gtFine_trainvaltest.zip       (241 MB, packageID=1)\n"
        f"  3. put both zips in {root} and run `segkd download cityscapes --root {root}` again\n"
        f"     (or unzip them there yourself: {root}/leftImg8bit/<split>/<city>/..., {root}/gtFine/...)\n"
        f"  4. check the tree: `segkd prepare cityscapes --root {root}`\n"
        "segkd reads *_gtFine_labelIds.png directly; no cityscapesScripts conversion is needed."
    )


def install_cityscapes(root: Path, fetch) -> bool:
    """Extract the two zips if they are in ``root``; otherwise print what to fetch (False)."""
    from segkd.core.console import say
    from segkd.data.download import extract

    zips = [root / z for z in CITYSCAPES_ZIPS]
    if not all(z.is_file() for z in zips):
        say(cityscapes_instructions(root))
        return False
    for z in zips:
        extract(z, root, lambda n: n if n.startswith(("leftImg8bit/", "gtFine/")) else None)
        fetch.done(z)
    return True


register_dataset(DatasetSpec(
    "cityscapes", cityscapes, scan=scan_cityscapes, meta=cityscapes_meta,
    downloads=(Download("cityscapes", install_cityscapes, expected={"train": 2975, "val": 500}),)))
