"""Pairing images with masks from the files, for a dataset's scanner (``DatasetSpec.scan``).

Used by ``segkd.data.prepare``: unlike the dataset builders, a scanner never stops at the first
missing file; it returns every pair and the leftovers on both sides, so they can be reported.
Each dataset module writes its own scanner from these helpers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from segkd.data.base import list_images

Pairing = tuple[list[tuple[Path, Path]], list[Path], list[Path]]  # pairs, no mask, no image


def stems(folder: Path) -> dict[str, Path]:
    """stem -> image file in ``folder`` (a .png wins over a lossy file with the same stem)."""
    out: dict[str, Path] = {}
    for p in list_images(folder) if folder.is_dir() else []:
        if p.stem not in out or p.suffix.lower() == ".png":
            out[p.stem] = p
    return out


def match(images: dict[str, Path], masks: dict[str, Path]) -> Pairing:
    """Pair by key; the leftovers on each side."""
    pairs = [(images[k], masks[k]) for k in sorted(images) if k in masks]
    return (pairs, [images[k] for k in sorted(images) if k not in masks],
            [masks[k] for k in sorted(masks) if k not in images])


def match_listed(ids: list[str], image_for: Callable[[str], Path],
                 mask_for: Callable[[str], Path]) -> Pairing:
    """Pair listed ids; a listed id without an image counts as a mask without image."""
    images = {i: image_for(i) for i in ids if image_for(i).is_file()}
    masks = {i: mask_for(i) for i in ids if mask_for(i).is_file()}
    no_image = [image_for(i) for i in ids if i not in images]
    pairs, no_mask, _ = match(images, masks)
    return pairs, no_mask, no_image


@dataclass
class LayoutMeta:
    """What a dataset's masks mean: class names, ignore index, raw -> id table, RGB palette."""

    classes: list[str]
    ignore_index: int
    lut: np.ndarray | None = None  # 256 entries: raw value -> id
    palette: list[tuple[int, int, int]] | None = None
