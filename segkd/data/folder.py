"""Generic layouts: labeled "folder" (images/ + masks/) and unlabeled "image_folder"."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from segkd.core.errors import DataError
from segkd.data.base import (
    IMAGE_EXTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    build_lut,
    list_images,
    read_lines,
    require_dir,
    require_items,
)
from segkd.data.mask_values import parse_value_map
from segkd.data.pairing import LayoutMeta, Pairing, match, match_listed, stems
from segkd.data.spec import DatasetSpec, register_dataset


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """stem -> file, preferring .png over lossy formats when a stem appears twice."""
    out: dict[str, Path] = {}
    for f in files:
        if f.stem not in out or f.suffix.lower() == ".png":
            out[f.stem] = f
    return out


def mask_key(mask: Path, suffix: str = "") -> str | None:
    """The image stem a mask file belongs to: its name less ``suffix`` (``"_mask"`` matches
    ``x_mask.png``; a suffix with an extension, ``"_mask.png"``, matches the full name); None when
    the name does not end with the suffix."""
    if suffix and Path(suffix).suffix.lower() in IMAGE_EXTS:
        return mask.name[: -len(suffix)] if mask.name.endswith(suffix) else None
    if suffix:
        return mask.stem[: -len(suffix)] if mask.stem.endswith(suffix) else None
    return mask.stem


def masks_by_key(mask_dir: Path, suffix: str = "") -> dict[str, Path]:
    """image stem -> mask file in ``mask_dir`` (a .png wins over a lossy file)."""
    out: dict[str, Path] = {}
    for f in list_images(mask_dir):
        key = mask_key(f, suffix)
        if key is not None and (key not in out or f.suffix.lower() == ".png"):
            out[key] = f
    return out


def fraction_split(images: list[Path], split: str, val_fraction: float, seed: int) -> list[Path]:
    """A seeded partition of ``images`` into "train" / "val": ``round(n * val_fraction)`` images
    (at least 1) drawn with ``seed`` go to val, the others to train (both kept in file order)."""
    if len(images) < 2:
        raise DataError(f"cannot split {len(images)} image(s) into train and val: add images or "
                        "give images/<split>/ folders")
    n_val = min(len(images) - 1, max(1, round(len(images) * val_fraction)))
    val = set(np.random.default_rng(seed).permutation(len(images))[:n_val].tolist())
    return [p for i, p in enumerate(images) if (i in val) == (split == "val")]


def _split_images(root: Path, img_dir: Path, split: str | None, layout: "FolderLayout") -> tuple[list[Path], Path, Path]:
    """The images of ``split`` and the folders its images and masks are in."""
    mask_dir = layout.mask_dir(root)
    if split and (img_dir / split).is_dir():
        return list_images(img_dir / split), img_dir / split, \
            require_dir(mask_dir / split, f"masks of split '{split}'")
    if split and (root / f"{split}.txt").is_file():
        by_stem = _by_stem(list_images(img_dir))
        names = [Path(n).stem for n in read_lines(root / f"{split}.txt")]
        missing = [n for n in names if n not in by_stem]
        if missing:
            raise DataError(f"{root / f'{split}.txt'} lists images not in {img_dir}: {missing[:5]}")
        return [by_stem[n] for n in names], img_dir, mask_dir
    flat = not any(d.is_dir() for d in img_dir.iterdir()) and not any(
        (root / f"{s}.txt").is_file() for s in ("train", "val"))
    if split in ("train", "val") and flat and layout.val_fraction > 0:
        return fraction_split(list_images(img_dir), split, layout.val_fraction, layout.split_seed), \
            img_dir, mask_dir
    if split:
        raise DataError(f"split '{split}' not found: neither {img_dir / split} nor "
                        f"{root / f'{split}.txt'}" + (" (a flat folder gives 'train' and 'val' "
                                                      "by val_fraction)" if flat else ""))
    return list_images(img_dir), img_dir, mask_dir


@dataclass
class FolderLayout:
    """Where a "folder" dataset keeps its files (the builder's layout options)."""

    images: str = "images"
    masks: str = "masks"
    mask_suffix: str = ""
    val_fraction: float = 0.2
    split_seed: int = 0

    def image_dir(self, root: Path) -> Path:
        return require_dir(root / self.images, "image folder (option 'images')")

    def mask_dir(self, root: Path) -> Path:
        return require_dir(root / self.masks, "mask folder (option 'masks')")


def _folder_items(root: Path, split: str | None,
                  layout: FolderLayout) -> tuple[list[tuple[Path, Path]], Path]:
    """Pairs of ``split`` (see :func:`folder` for the layouts), and its image folder."""
    images, img_dir, mask_dir = _split_images(root, layout.image_dir(root), split, layout)
    masks = masks_by_key(mask_dir, layout.mask_suffix)
    items = []
    for img in images:
        if img.stem not in masks:
            raise DataError(f"no mask for image {img} in {mask_dir} (expected "
                            f"{img.stem}{layout.mask_suffix or ''}.png; options 'masks', 'mask_suffix')")
        items.append((img, masks[img.stem]))
    return require_items(items, img_dir), img_dir


def _class_names(root: Path, classes: Sequence[str] | None, num_classes: int | None) -> list[str]:
    """Classes from the option, else ``root/classes.txt``, else ``class_<i>`` x num_classes."""
    if classes is not None:
        return list(classes)
    if (root / "classes.txt").is_file():
        return read_lines(root / "classes.txt")
    if num_classes is not None:
        return [f"class_{i}" for i in range(num_classes)]
    raise DataError(f"no class names: write {root / 'classes.txt'} or set the 'classes' option")


def folder(
    root: str | Path,
    split: str | None = "train",
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    value_map: dict[int, int] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    images: str = "images",
    masks: str = "masks",
    mask_suffix: str = "",
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> SegmentationDataset:
    """Any image/mask folder pair matched by file stem (png/jpg/jpeg/webp).

    Layouts (``images`` / ``masks`` name the two sub-folders): ``root/images/<split>/*`` +
    ``root/masks/<split>/*``; or ``root/images/*`` + ``root/masks/*`` with ``root/<split>.txt``
    listing names; or, without split folders or lists, ``root/images/*`` + ``root/masks/*``
    split into "train" and "val" by a seeded ``val_fraction`` (``split_seed``). A mask is named
    like its image plus ``mask_suffix`` (``"_mask"``: ``x.jpg`` -> ``x_mask.png``).
    ``value_map`` maps raw mask values to ids (others -> ignore_index), e.g. ``{0: 0, 255: 1}``
    (a key ``"A-B"`` maps the values A..B: ``{"0-127": 0, "128-255": 1}`` bins lossy masks);
    ``palette`` maps RGB colour masks (``palette[i]`` = colour of class i). Class names come
    from ``classes``, else ``root/classes.txt``, else ``num_classes`` (``class_<i>``).
    """
    root = require_dir(root, "dataset root")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DataError(f"folder: val_fraction must be in [0, 1), got {val_fraction}")
    layout = FolderLayout(images, masks, mask_suffix or "", float(val_fraction), int(split_seed))
    items, img_dir = _folder_items(root, split, layout)
    lut = None
    if value_map is not None:
        lut = build_lut(parse_value_map(value_map), ignore_index)
    return SegmentationDataset(
        items=items, classes=_class_names(root, classes, num_classes), ignore_index=ignore_index,
        mean=mean, std=std, lut=lut, palette=palette, name=f"folder/{split or img_dir.name}",
    )


def image_folder(
    root: str | Path,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationDataset:
    """Unlabeled images anywhere under ``root`` (or ``root/<split>`` if it exists).

    Masks are all ``ignore_index``; ``classes`` (or ``num_classes``) only describe the task.
    """
    root = require_dir(root, "image folder")
    if split and (root / split).is_dir():
        root = root / split
    images = list_images(root, recursive=True)
    if not images:
        raise DataError(f"empty split: no {'/'.join(IMAGE_EXTS)} images found under {root}")
    names = list(classes) if classes is not None else [f"class_{i}" for i in range(num_classes or 0)]
    return SegmentationDataset(
        items=[(p, None) for p in images], classes=names, ignore_index=ignore_index,
        mean=mean, std=std, name=f"image_folder/{root.name}",
    )


def scan_folder(root: Path, options: dict) -> dict[str, Pairing]:
    """Split folders, else ``<split>.txt`` lists, else one split "all"."""
    img_dir, mask_dir = root / options.get("images", "images"), root / options.get("masks", "masks")
    suffix = options.get("mask_suffix") or ""
    keyed = lambda d: masks_by_key(d, suffix) if d.is_dir() else {}  # noqa: E731
    subdirs = sorted(d.name for d in img_dir.iterdir() if d.is_dir()) if img_dir.is_dir() else []
    if subdirs:
        return {s: match(stems(img_dir / s), keyed(mask_dir / s)) for s in subdirs}
    images, masks = stems(img_dir), keyed(mask_dir)
    lists = sorted(p.stem for p in root.glob("*.txt") if p.stem != "classes")
    if not lists:
        return {"all": match(images, masks)}
    return {s: match_listed([Path(n).stem for n in read_lines(root / f"{s}.txt")],
                            lambda i: images.get(i, img_dir / i), lambda i: masks.get(i, mask_dir / i))
            for s in lists}


def folder_meta(root: Path, options: dict) -> LayoutMeta:
    """Classes from the options or classes.txt, the value_map as a lookup table, the palette."""
    classes = options.get("classes") or (
        read_lines(root / "classes.txt") if (root / "classes.txt").is_file()
        else [f"class_{i}" for i in range(int(options.get("num_classes") or 0))])
    ignore = int(options.get("ignore_index", 255))
    value_map = options.get("value_map")
    lut = None if not value_map else build_lut(parse_value_map(value_map), ignore).numpy()
    return LayoutMeta(list(classes), ignore, lut, options.get("palette"))


register_dataset(DatasetSpec("folder", folder, scan=scan_folder, meta=folder_meta))
register_dataset(DatasetSpec("image_folder", image_folder))
