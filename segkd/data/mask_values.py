"""What the raw values of index masks say, shared by ``segkd prepare`` and the pre-flight check.

* :func:`parse_value_map`: the ``value_map`` option (keys: mask values, or inclusive ranges
  ``"A-B"`` that bin the values between two levels) as ``{raw value: id}``;
* :func:`value_counts`: pixels per value of one mask, and how many of them are *interior*
  (all 4 neighbours hold the same value);
* :func:`lossy_values`: whether the values look like compression or interpolation noise around
  a few levels (JPEG masks, masks resized with a smooth filter), and :func:`binning_map`, the
  ``value_map`` that maps every value to its nearest level.

A labelled region has interior pixels; the in-between values that JPEG compression or bilinear
resizing invent along region edges have almost none. Lossy masks hold a few values with
interiors (the levels) and many without, numerically between or next to them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from segkd.core.errors import DataError

LOSSY_EXTS = (".jpg", ".jpeg", ".webp")
REGION_SHARE = 0.1  # a value with at least this share of interior pixels is a labelled region
NOISE_VALUES = 8  # without a lossy file format, at least this many noise values (and 3 per level)
UNMAPPED_SHARE = 0.01  # mask values a value_map leaves out: above this share of pixels, an error
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_value_map(value_map: Any, option: str = "value_map") -> dict[int, int]:
    """``{raw value: id}`` from a value_map option: keys are mask values 0..255 (ints or numeric
    strings, as JSON writes them) or inclusive ranges ``"A-B"`` (``{"0-127": 0, "128-255": 1}``
    bins 8-bit values into two classes). DataError naming ``option`` and the bad entry."""
    example = "e.g. {0: 0, 255: 1}, or {0-127: 0, 128-255: 1} to bin values"
    if not isinstance(value_map, Mapping):
        raise DataError(f"{option} must be a mapping of mask value -> class id ({example}), got "
                        f"{type(value_map).__name__} {str(value_map)[:60]!r}")
    out: dict[int, int] = {}
    for key, value in value_map.items():
        try:
            tid = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{option}: the class id of key {key!r} is {value!r}, not an integer "
                            f"({example})") from None
        text = str(key).strip()
        span = _RANGE.match(text)
        if span:
            lo, hi = int(span.group(1)), int(span.group(2))
        elif text.lstrip("-").isdigit():
            lo = hi = int(text)
        else:
            raise DataError(f"{option}: key {key!r} is neither a mask value nor a range 'A-B' ({example})")
        if not 0 <= lo <= hi <= 255:
            raise DataError(f"{option}: key {key!r} is not a value or range within 0..255 (8-bit mask values)")
        out.update({v: tid for v in range(lo, hi + 1)})
    return out


def value_map_text(value_map: Mapping) -> str:
    """A value_map as written in YAML flow style: ``{0-127: 0, 128-255: 1}``."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in value_map.items()) + "}"


def value_counts(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels per value, interior pixels per value) of a uint8 [H, W] mask, 256 entries each;
    a pixel is interior when its 4 neighbours hold its value (the border row / column is not)."""
    hist = np.bincount(arr.ravel(), minlength=256)
    c = arr[1:-1, 1:-1]
    same = (c == arr[:-2, 1:-1]) & (c == arr[2:, 1:-1]) & (c == arr[1:-1, :-2]) & (c == arr[1:-1, 2:])
    return hist, np.bincount(c[same].ravel(), minlength=256)


@dataclass
class Lossy:
    """Mask values that look like noise around a few levels."""

    levels: list[int]  # values with labelled regions
    noise: list[int]  # values found only along edges
    share: float  # of the pixels, in noise values


def lossy_values(hist: Mapping[int, int], interior: Mapping[int, int],
                 lossy_format: bool = False) -> Lossy | None:
    """The levels and noise values when ``hist`` (value -> pixels) and ``interior`` (value ->
    interior pixels) look like a few labelled levels blurred by compression or interpolation:
    some values with regions, values without any, at most half the pixels in those, and either
    masks in a lossy file format or many noise values (>= NOISE_VALUES and 3 per level; a
    dataset of a few thin classes, lane lines or vessels, has fewer). None otherwise."""
    values = sorted(v for v, n in hist.items() if n)
    if not values or values[-1] > 255 or values[0] < 0:
        return None
    region = [v for v in values if interior.get(v, 0) >= REGION_SHARE * hist[v]]
    noise = [v for v in values if v not in set(region)]
    total = sum(hist[v] for v in values)
    share = sum(hist[v] for v in noise) / total
    if not region or not noise or share > 0.5:
        return None
    if lossy_format or len(noise) >= max(NOISE_VALUES, 3 * len(region)):
        return Lossy(region, noise, share)
    return None


def binning_map(levels: list[int], ignore_index: int) -> dict[str, int]:
    """A value_map sending every 8-bit value to its nearest level, the levels numbered in order
    (the ignore index stays ignored, except 255 of 0/255 masks): levels 0, 255 ->
    ``{"0-127": 0, "128-255": 1}``."""
    levels = sorted(levels)
    keep = [v for v in levels if v != ignore_index or levels == [0, 255]]
    ids = {v: (keep.index(v) if v in keep else ignore_index) for v in levels}
    cuts = [(a + b) // 2 for a, b in zip(levels, levels[1:])] + [255]
    out, lo = {}, 0
    for level, hi in zip(levels, cuts):
        out[f"{lo}-{hi}" if lo != hi else str(lo)] = ids[level]
        lo = hi + 1
    return out


# ----------------------------------------------------------------------------- messages
# One wording for `segkd prepare` and the pre-flight check; ``key`` is how the value_map is named
# where the message appears ("data.options.value_map" in a config, "value_map" for prepare).
def _of(split: str) -> str:
    """"split 'train'", or "splits train, val" for a list."""
    return f"splits {split}" if ", " in split else f"split '{split}'"


def lossy_message(split: str, lossy: Lossy, ignore_index: int, key: str, lossy_files: int = 0,
                  example: Any = None) -> str:
    """Masks that look lossy: what was found and the two ways out."""
    bins = binning_map(lossy.levels, ignore_index)
    n = len(set(bins.values()) - {ignore_index})
    eg = f", e.g. {example}" if example else ""
    files = f" ({lossy_files} of the checked masks are JPEG/WebP files)" if lossy_files else ""
    return (f"masks of {_of(split)} look lossy: {len(lossy.noise)} mask values ({lossy.share:.1%} "
            f"of the checked pixels{eg}) appear only along edges around the levels "
            f"{lossy.levels[:8]}{files}: compression or smooth resizing invented them, so edge "
            "pixels get wrong labels; re-save the masks losslessly (PNG) from the original labels, "
            f"or bin the values with {key}={value_map_text(bins)} ({n} classes)")


def unmapped_values(hist: Mapping[int, int], value_map: dict[int, int]) -> tuple[list[int], float]:
    """The values of ``hist`` (value -> pixels) that are not keys of ``value_map``, and their
    share of the pixels."""
    missing = [v for v in sorted(hist) if v not in value_map]
    return missing, sum(hist[v] for v in missing) / max(1, sum(hist.values()))


def map_keys(value_map: Mapping) -> list:
    """The keys of a value_map as written (numeric strings, as JSON gives them, as ints)."""
    return [int(k) if str(k).strip().isdigit() else str(k) for k in value_map]


def unmapped_message(split: str, missing: list[int], share: float, value_map: Mapping,
                     ignore_index: int, key: str, example: Any = None) -> str:
    """Mask values a value_map leaves out: they become the ignore index."""
    eg = f", e.g. {example}" if example else ""
    return (f"mask values {missing[:10]} of {_of(split)} ({share:.1%} of the checked pixels{eg}) "
            f"are not keys of {key} (its keys: {map_keys(value_map)[:10]}): they become the ignore "
            f"index {ignore_index} and are never trained; add them to {key} as classes, or as "
            f"{missing[0]}: {ignore_index} to ignore them on purpose")


def absent_message(split: str, checked: int, classes: list[str], absent: list[int],
                   value_map: Mapping | None, values: list[int], key: str, more: str) -> str:
    """Classes with no pixel in the checked training masks (naming the value_map keys that
    match no mask value, if that is why)."""
    names = ", ".join(f"'{classes[c]}' (id {c})" for c in absent[:8])
    names += f" and {len(absent) - 8} more" if len(absent) > 8 else ""
    why = ""
    dead = [k for k, t in (value_map or {}).items() if int(t) in absent]
    if dead:
        why = (f"; {key} key(s) {map_keys(dict.fromkeys(dead))[:8]} match no mask value (the masks "
               f"hold {values[:10]})")
    return (f"no pixel of class {names} in the {checked} checked mask(s) of {_of(split)}{why}: "
            f"training never sees it; check the masks and the value_map / classes ({more})")


# ----------------------------------------------------------------------------- prepare's findings
# ``splits``: segkd.data.prepare.SplitReport-like (split, histogram, interior, lossy_masks,
# masks_checked); findings are (level, split(s), message) tuples.
def lossy_findings(splits: list, ignore_index: int,
                   value_map: Mapping | None) -> tuple[list[tuple[str, str, str]], list[int] | None]:
    """An error per split whose masks look lossy (unless ``value_map`` lists every value), a
    warning for other JPEG/WebP masks; and the levels of the lossy ones (None: none is)."""
    vm = None if value_map is None else parse_value_map(value_map)
    found, levels = [], None
    for rep in splits:
        lossy = lossy_values(rep.histogram, rep.interior, rep.lossy_masks > 0)
        if lossy is not None and not (vm is not None and set(lossy.noise) <= set(vm)):
            levels = sorted(set(levels or []) | set(lossy.levels))
            found.append(("error", rep.split, lossy_message(rep.split, lossy, ignore_index,
                                                            "value_map", rep.lossy_masks)))
        elif rep.lossy_masks:
            found.append(("warning", rep.split, f"{rep.lossy_masks} mask(s) in a lossy format "
                          "(JPEG/WebP): compression noise invents label values; use PNG"))
    return found, levels


def map_findings(splits: list, train: list, seen: set[int], classes: list[str], ignore_index: int,
                 value_map: Mapping | None) -> list[tuple[str, str, str]]:
    """Values ``value_map`` leaves out (an error above UNMAPPED_SHARE of the pixels, else a
    warning); classes whose id is not in ``seen`` (the ids of the ``train`` splits' masks)."""
    found = []
    if value_map is not None:
        hist: dict[int, int] = {}
        for rep in splits:
            for v, n in rep.histogram.items():
                hist[v] = hist.get(v, 0) + n
        missing, share = unmapped_values(hist, parse_value_map(value_map))
        if missing:
            where = ", ".join(r.split for r in splits if set(r.histogram) & set(missing))
            found.append(("error" if share > UNMAPPED_SHARE else "warning", where, unmapped_message(
                where, missing, share, value_map, ignore_index, "value_map")))
    absent = [i for i in range(len(classes)) if i not in seen and i != ignore_index]
    if absent and any(r.histogram for r in train):
        where = ", ".join(r.split for r in train)
        found.append(("warning", where, absent_message(
            where, sum(r.masks_checked for r in train), classes, absent, value_map,
            sorted({v for r in train for v in r.histogram}), "value_map",
            "--max-masks 0 reads every mask")))
    return found
