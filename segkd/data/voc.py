"""Pascal VOC 2012 segmentation, optionally with the SBD augmented training set (train_aug)."""
from __future__ import annotations

from pathlib import Path

from segkd.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    Transform,
    read_lines,
    require_dir,
    require_file,
    require_items,
)
from segkd.errors import DataError
from segkd.registry import DATASETS

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
VOC_IGNORE = 255


def voc_root(root: str | Path) -> Path:
    """Accept ``.../VOC2012`` or its parent ``.../VOCdevkit``."""
    root = require_dir(root, "VOC root")
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    return require_dir(root / "JPEGImages", "VOC JPEGImages folder").parent


def read_id_list(path: Path) -> list[str]:
    """Image ids from a split list; also reads ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``."""
    return [Path(line.split()[0]).stem for line in read_lines(path)]


def _split_ids(root: Path, split: str, sbd: bool) -> tuple[list[str], Path]:
    """Ids of ``split`` and the mask folder; train_aug drops every VOC val id."""
    sets = root / "ImageSets" / "Segmentation"
    if split != "train_aug":
        return read_id_list(require_file(sets / f"{split}.txt", f"VOC split list '{split}'")), \
            root / "SegmentationClass"
    if not sbd:
        raise DataError("VOC split 'train_aug' needs sbd=True (SegmentationClassAug masks)")
    val = set(read_id_list(require_file(sets / "val.txt", "VOC val list (excluded from train_aug)")))
    ids = read_id_list(require_file(sets / "train_aug.txt", "VOC split list 'train_aug'"))
    return [i for i in dict.fromkeys(ids) if i not in val], root / "SegmentationClassAug"


@DATASETS.register("voc")
def voc(
    root: str | Path,
    split: str = "train",
    transform: Transform | None = None,
    cache: bool = False,
    sbd: bool = False,
) -> SegmentationDataset:
    """Pascal VOC 2012: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG).

    Splits come from ``ImageSets/Segmentation/<split>.txt``. With ``sbd=True`` the split
    "train_aug" reads grey index masks from ``SegmentationClassAug`` and excludes VOC val ids.
    21 classes; 255 (object borders) is ignored.
    """
    root = voc_root(root)
    ids, mask_dir = _split_ids(root, split, sbd)
    require_dir(mask_dir, "VOC mask folder")
    items = [(root / "JPEGImages" / f"{i}.jpg", mask_dir / f"{i}.png") for i in ids]
    for img, mask in items:
        require_file(img, "VOC image")
        require_file(mask, "VOC mask")
    require_items(items, root / "ImageSets" / "Segmentation" / f"{split}.txt")
    return SegmentationDataset(
        items=items, classes=VOC_CLASSES, ignore_index=VOC_IGNORE, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, transform=transform, name=f"voc/{split}", cache=cache,
    )
