"""Generic layouts: labeled "folder" (images/ + masks/) and unlabeled "image_folder"."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from segkd.data.base import (
    IMAGE_EXTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
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


def _by_stem(files: list[Path]) -> dict[str, Path]:
    """stem -> file, preferring .png over lossy formats when a stem appears twice."""
    out: dict[str, Path] = {}
    for f in files:
        if f.stem not in out or f.suffix.lower() == ".png":
            out[f.stem] = f
    return out


def _folder_items(root: Path, split: str | None) -> tuple[list[tuple[Path, Path]], Path]:
    """Pairs from ``images/<split>`` + ``masks/<split>``, or ``images`` + ``masks`` + ``<split>.txt``."""
    img_dir, mask_dir = require_dir(root / "images"), require_dir(root / "masks")
    if split and (img_dir / split).is_dir():
        img_dir, mask_dir = img_dir / split, require_dir(mask_dir / split, f"masks of split '{split}'")
        images = list_images(img_dir)
    elif split and (root / f"{split}.txt").is_file():
        by_stem = _by_stem(list_images(img_dir))
        names = [Path(n).stem for n in read_lines(root / f"{split}.txt")]
        missing = [n for n in names if n not in by_stem]
        if missing:
            raise DataError(f"{root / f'{split}.txt'} lists images not in {img_dir}: {missing[:5]}")
        images = [by_stem[n] for n in names]
    elif split:
        raise DataError(f"split '{split}' not found: neither {img_dir / split} nor {root / f'{split}.txt'}")
    else:
        images = list_images(img_dir)
    masks = _by_stem(list_images(mask_dir))
    items = []
    for img in images:
        if img.stem not in masks:
            raise DataError(f"no mask for image {img} in {mask_dir}")
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


@DATASETS.register("folder")
def folder(
    root: str | Path,
    split: str | None = "train",
    transform: Transform | None = None,
    cache: bool = False,
    classes: Sequence[str] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    value_map: dict[int, int] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationDataset:
    """Any image/mask folder pair matched by file stem (png/jpg/jpeg/webp).

    Layouts: ``root/images/<split>/*`` + ``root/masks/<split>/*``, or ``root/images/*`` +
    ``root/masks/*`` with ``root/<split>.txt`` listing names. ``value_map`` maps raw mask values
    to ids (others -> ignore_index), e.g. ``{0: 0, 255: 1}``; ``palette`` maps RGB colour masks
    (``palette[i]`` = colour of class i).
    """
    root = require_dir(root, "dataset root")
    items, img_dir = _folder_items(root, split)
    lut = None
    if value_map is not None:
        lut = build_lut({int(k): int(v) for k, v in value_map.items()}, ignore_index)
    return SegmentationDataset(
        items=items, classes=_class_names(root, classes, num_classes), ignore_index=ignore_index,
        mean=mean, std=std, transform=transform, lut=lut, palette=palette,
        name=f"folder/{split or img_dir.name}", cache=cache,
    )


@DATASETS.register("image_folder")
def image_folder(
    root: str | Path,
    split: str | None = None,
    transform: Transform | None = None,
    cache: bool = False,
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
        mean=mean, std=std, transform=transform, name=f"image_folder/{root.name}", cache=cache,
    )
