"""Known dataset layouts read straight from their files: image/mask pairing and class metadata.

Used by ``segkd.data.prepare``: unlike the dataset builders, a scanner never stops at the first
missing file; it returns every pair and the leftovers on both sides, so they can be reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from segkd.data.base import build_lut, list_images, read_lines
from segkd.data.mask_values import parse_value_map
from segkd.data.voc import read_id_list, voc_root

Pairing = tuple[list[tuple[Path, Path]], list[Path], list[Path]]  # pairs, no mask, no image


def _stems(folder: Path) -> dict[str, Path]:
    """stem -> image file in ``folder`` (a .png wins over a lossy file with the same stem)."""
    out: dict[str, Path] = {}
    for p in list_images(folder) if folder.is_dir() else []:
        if p.stem not in out or p.suffix.lower() == ".png":
            out[p.stem] = p
    return out


def _match(images: dict[str, Path], masks: dict[str, Path]) -> Pairing:
    """Pair by key; the leftovers on each side."""
    pairs = [(images[k], masks[k]) for k in sorted(images) if k in masks]
    return (pairs, [images[k] for k in sorted(images) if k not in masks],
            [masks[k] for k in sorted(masks) if k not in images])


def _match_listed(ids: list[str], image_for: Callable[[str], Path],
                  mask_for: Callable[[str], Path]) -> Pairing:
    """Pair listed ids; a listed id without an image counts as a mask without image."""
    images = {i: image_for(i) for i in ids if image_for(i).is_file()}
    masks = {i: mask_for(i) for i in ids if mask_for(i).is_file()}
    no_image = [image_for(i) for i in ids if i not in images]
    pairs, no_mask, _ = _match(images, masks)
    return pairs, no_mask, no_image


def _scan_camvid(root: Path, options: dict) -> dict[str, Pairing]:
    return {d.name: _match(_stems(d), _stems(root / f"{d.name}annot"))
            for d in sorted(root.iterdir()) if d.is_dir() and (root / f"{d.name}annot").is_dir()}


def _scan_camvid32(root: Path, options: dict) -> dict[str, Pairing]:
    valid_file = root / "valid.txt"
    valid = {Path(n).stem for n in read_lines(valid_file)} if valid_file.is_file() else set()
    images = _stems(root / "images")
    masks = {k[:-2]: p for k, p in _stems(root / "labels").items() if k.endswith("_P")}
    pick = lambda d, val: {k: v for k, v in d.items() if (k in valid) == val}  # noqa: E731
    return {"train": _match(pick(images, False), pick(masks, False)),
            "val": _match(pick(images, True), pick(masks, True))}


def _scan_voc(root: Path, options: dict) -> dict[str, Pairing]:
    root = voc_root(root)
    sets, out = root / "ImageSets" / "Segmentation", {}
    val = set(read_id_list(sets / "val.txt")) if (sets / "val.txt").is_file() else set()
    for split in ("train", "val") + (("train_aug",) if options.get("sbd") else ()):
        if (sets / f"{split}.txt").is_file():
            ids = [i for i in dict.fromkeys(read_id_list(sets / f"{split}.txt"))
                   if split != "train_aug" or i not in val]
            masks = root / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
            out[split] = _match_listed(ids, lambda i: root / "JPEGImages" / f"{i}.jpg",
                                       lambda i, m=masks: m / f"{i}.png")
    return out


def _scan_cityscapes(root: Path, options: dict) -> dict[str, Pairing]:
    def keyed(folder: Path, suffix: str) -> dict[str, Path]:
        return {f"{p.parent.name}/{p.name[: -len(suffix)]}": p for p in folder.glob(f"*/*{suffix}")}
    img_root = root / "leftImg8bit"
    splits = sorted(d.name for d in img_root.iterdir() if d.is_dir()) if img_root.is_dir() else []
    return {s: _match(keyed(img_root / s, "_leftImg8bit.png"),
                      keyed(root / "gtFine" / s, "_gtFine_labelIds.png")) for s in splits}


def _scan_folder(root: Path, options: dict) -> dict[str, Pairing]:
    from segkd.data.folder import masks_by_key

    img_dir, mask_dir = root / options.get("images", "images"), root / options.get("masks", "masks")
    suffix = options.get("mask_suffix") or ""
    keyed = lambda d: masks_by_key(d, suffix) if d.is_dir() else {}  # noqa: E731
    subdirs = sorted(d.name for d in img_dir.iterdir() if d.is_dir()) if img_dir.is_dir() else []
    if subdirs:
        return {s: _match(_stems(img_dir / s), keyed(mask_dir / s)) for s in subdirs}
    images, masks = _stems(img_dir), keyed(mask_dir)
    lists = sorted(p.stem for p in root.glob("*.txt") if p.stem != "classes")
    if not lists:
        return {"all": _match(images, masks)}
    return {s: _match_listed([Path(n).stem for n in read_lines(root / f"{s}.txt")],
                             lambda i: images.get(i, img_dir / i), lambda i: masks.get(i, mask_dir / i))
            for s in lists}


SCANNERS: dict[str, Callable[[Path, dict], dict[str, Pairing]]] = {
    "camvid": _scan_camvid, "camvid32": _scan_camvid32, "voc": _scan_voc,
    "cityscapes": _scan_cityscapes, "folder": _scan_folder,
}


@dataclass
class LayoutMeta:
    """What a dataset's masks mean: class names, ignore index, raw -> id table, RGB palette."""

    classes: list[str]
    ignore_index: int
    lut: np.ndarray | None = None  # 256 entries: raw value -> id
    palette: list[tuple[int, int, int]] | None = None


def layout_meta(name: str, root: Path, options: dict) -> LayoutMeta | None:
    """Classes and label mapping of a known format without building it (None if unknown)."""
    from segkd.data import camvid, cityscapes, voc

    if name == "camvid":
        return LayoutMeta(list(camvid.CAMVID_CLASSES), camvid.CAMVID_IGNORE)
    if name == "voc":
        return LayoutMeta(list(voc.VOC_CLASSES), voc.VOC_IGNORE)
    if name == "cityscapes":
        lut = build_lut(cityscapes.CITYSCAPES_LABELID_TO_TRAINID, cityscapes.CITYSCAPES_IGNORE)
        return LayoutMeta(list(cityscapes.CITYSCAPES_CLASSES), cityscapes.CITYSCAPES_IGNORE, lut.numpy())
    if name != "folder":
        return None
    classes = options.get("classes") or (
        read_lines(root / "classes.txt") if (root / "classes.txt").is_file()
        else [f"class_{i}" for i in range(int(options.get("num_classes") or 0))])
    ignore = int(options.get("ignore_index", 255))
    value_map = options.get("value_map")
    lut = None if not value_map else build_lut(parse_value_map(value_map), ignore).numpy()
    return LayoutMeta(list(classes), ignore, lut, options.get("palette"))
