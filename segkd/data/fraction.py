"""Seeded fractions of a dataset (label-efficiency experiments) and their file lists."""
from __future__ import annotations

import math
import random
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from segkd.core.errors import ConfigError, DataError
from segkd.data.base import require_file


def fraction_count(n_items: int, fraction: float) -> int:
    """How many of ``n_items`` a ``fraction`` keeps: truncated, as kdsemseg's split script
    (``int(n * percent / 100)``: 25% of 367 images is 91, not 92), and at least one.

    The fraction is read as the decimal it is written as (``Fraction(repr(0.29))`` is exactly
    29/100), so ``100 * 0.29 = 28.999...`` cannot drop an item that the integer percentage keeps.
    kdsemseg would sample zero items where the product is below one; an empty training list
    cannot train, so one item is kept instead.
    """
    return max(1, math.floor(Fraction(repr(float(fraction))) * n_items))


def select_fraction(n_items: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of a seeded random ``fraction`` of ``n_items`` (:func:`fraction_count`
    items).

    ``fraction=1.0`` returns ``list(range(n_items))``. The same (n_items, fraction, seed)
    always gives the same indices: ``random.Random(seed).sample`` picks the same positions as
    kdsemseg's ``random.seed(1); random.sample(file_list, count)`` does in a list of the same
    order (kdsemseg's list was ``os.listdir`` order, which the file system decides; segkd's is
    the dataset's sorted order).
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if n_items <= 0:
        raise DataError("cannot select a fraction of an empty dataset")
    if fraction == 1.0:
        return list(range(n_items))
    k = fraction_count(n_items, fraction)
    return sorted(random.Random(seed).sample(range(n_items), k))


def write_file_list(dataset, indices: Sequence[int], path: str | Path) -> Path:
    """Write the image file names of ``dataset.items[i] for i in indices``, one per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [Path(dataset.items[i][0]).name for i in indices]
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


def read_file_list(dataset, path: str | Path) -> list[int]:
    """Indices of the file names listed in ``path`` (inverse of write_file_list)."""
    index = {Path(img).name: i for i, (img, _) in enumerate(dataset.items)}
    text = require_file(path, "file list").read_text(encoding="utf-8")
    names = [n.strip() for n in text.splitlines() if n.strip()]
    missing = [n for n in names if n not in index]
    if missing:
        raise DataError(f"{path} lists files not in the dataset: {missing[:5]}")
    return [index[n] for n in names]
