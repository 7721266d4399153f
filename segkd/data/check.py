"""Pre-flight data check: the cheap checks of ``segkd prepare``, on a sample of each split.

``train`` / ``distill`` / ``eval`` call :func:`check_splits` on the datasets they built, before
the first step. At most ``files`` evenly spaced image/mask pairs per split are decoded through the
dataset's own path (so a bad file fails here, not mid-epoch) and examined for what would make a
run learn from, or be scored on, silently wrong data:

* errors (certainly wrong): masks that look lossy (values clustered around a few levels: JPEG
  compression or interpolation noise, see :mod:`segkd.data.mask_values`) unless a ``value_map``
  lists every value; no labeled pixel in the sampled masks (every pixel is the ignore index, or
  maps to it through the label mapping, e.g. a ``value_map`` whose keys match no mask value);
  0/255 masks where 255 is the ignore index (every foreground pixel ignored); mask values a
  ``value_map`` leaves out covering more than ``UNMAPPED_SHARE`` of the pixels; a file the loader
  cannot use (corrupt, wrong size, label values outside the classes);
* warnings (probably wrong): fewer stray values the ``value_map`` leaves out; classes with no
  pixel in the checked training masks; few labeled pixels; 16-bit images that use a small part
  of their range (12-bit data: nearly black once scaled by 65535); images with transparent
  pixels (alpha is dropped).

Strictness ``mode``: "error" stops with the first error (one line naming the file and the key to
set), "warn" prints errors as warnings, "off" skips the check.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from torchvision.io import ImageReadMode, decode_image, read_file

from segkd.core.distributed import is_rank_zero
from segkd.core.errors import DataError
from segkd.data.base import SegmentationDataset, png_header, read_raw_mask
from segkd.data.mask_values import (
    LOSSY_EXTS,
    UNMAPPED_SHARE,
    absent_message,
    lossy_message,
    lossy_values,
    map_keys,
    parse_value_map,
    unmapped_message,
    unmapped_values,
    value_counts,
)

CHECK_MODES = ("error", "warn", "off")
LOW_LABELED_SHARE = 0.01  # below this share of labeled pixels a split gets a warning
LOW_16BIT_MAX = 4096  # a 16-bit image whose brightest sample is below this is 12-bit data (or less)
_console = Console(stderr=True, soft_wrap=True)


@dataclass
class SplitFacts:
    """What the sampled pairs of one split hold."""

    split: str
    checked: int = 0
    raw: Counter = field(default_factory=Counter)  # raw mask value -> pixels (index masks)
    interior: Counter = field(default_factory=Counter)  # raw value -> pixels whose 4 neighbours match
    lossy_files: int = 0  # sampled masks in a lossy file format (JPEG / WebP)
    class_pixels: Counter = field(default_factory=Counter)  # class id -> pixels
    labeled: int = 0  # pixels whose id is a class
    pixels: int = 0
    example: dict[str, Path] = field(default_factory=dict)  # what -> first file showing it
    # (level, message): "error" = the loader cannot use a file (always stops), "wrong" = the
    # data are certainly wrong (stops unless mode="warn"), "warning"
    problems: list[tuple[str, str]] = field(default_factory=list)


def sample_indices(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``range(n)`` (all of them when n <= limit)."""
    if n <= limit:
        return list(range(n))
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int)).tolist()


def _say(msg: str) -> None:
    """Print a warning line on stderr (the first process only: the others check too, to stop
    with the same error, but one prints the warnings)."""
    if is_rank_zero():
        _console.print(f"[yellow]warning:[/yellow] {escape(msg)}", highlight=False)


# ----------------------------------------------------------------------------- one file
def _image_notes(path: Path) -> list[str]:
    """Warnings about an image's bit depth and alpha (PNG only; 8-bit JPEG/WebP need none)."""
    header = png_header(path)
    if header is None or (header[0] != 16 and header[1] not in (4, 6)):
        return []
    raw = decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED).to(torch.int32)
    notes = []
    colour = raw[:-1] if header[1] in (4, 6) else raw
    if header[0] == 16 and int(colour.max()) < LOW_16BIT_MAX:
        notes.append(f"image {path} is 16-bit but its brightest value is {int(colour.max())} of "
                     "65535: segkd scales 16-bit images by 65535, so it trains on a nearly black "
                     "picture; save the images as 8-bit, stretched to their real range")
    if header[1] in (4, 6) and int(raw[-1].min()) < (65535 if header[0] == 16 else 255):
        notes.append(f"image {path} has transparent pixels: segkd drops the alpha channel and "
                     "uses the colours underneath")
    return notes


def _count_values(raw: torch.Tensor, mask_path: Path, facts: SplitFacts) -> None:
    """Add the raw values of a decoded mask (index masks) to ``facts``."""
    facts.lossy_files += mask_path.suffix.lower() in LOSSY_EXTS
    if raw.dim() != 2:
        return
    arr = raw.numpy()
    if arr.dtype == np.uint8:  # one histogram pass (np.unique sorts every pixel)
        hist, interior = value_counts(arr)
        values = np.flatnonzero(hist)
        counts = hist[values]
        facts.interior.update(dict(zip(values.tolist(), interior[values].tolist())))
    else:
        values, counts = np.unique(arr, return_counts=True)
    facts.raw.update(dict(zip(values.tolist(), counts.tolist())))
    for v in values.tolist():
        facts.example.setdefault(f"value {v}", mask_path)


def _examine(ds: SegmentationDataset, i: int, facts: SplitFacts) -> None:
    """Decode pair ``i`` like the loader does and add what it holds to ``facts``."""
    image_path, mask_path = ds.items[i]
    raw = None
    try:
        raw = read_raw_mask(mask_path) if mask_path is not None else None
        _, ids = ds._load(i)  # the loader's own decoding and checks (size, label values)
    except DataError as e:
        facts.problems.append(("error", str(e)))
        if raw is not None:  # its values may say why (lossy masks hold values outside the classes)
            _count_values(raw, mask_path, facts)
        return
    facts.problems += [("warning", note) for note in _image_notes(image_path)]
    facts.checked += 1
    if raw is None:
        return
    _count_values(raw, mask_path, facts)
    arr = ids.numpy()  # one histogram pass for uint8 ids (the usual case)
    values, counts = (np.unique(arr, return_counts=True) if arr.dtype != np.uint8 else
                      (np.arange(256), np.bincount(arr.ravel(), minlength=256)))
    per_class = {v: n for v, n in zip(values.tolist(), counts.tolist())
                 if n and 0 <= v < ds.num_classes and v != ds.ignore_index}
    facts.class_pixels.update(per_class)
    labeled = sum(per_class.values())
    facts.labeled += labeled
    facts.pixels += ids.numel()
    if labeled == 0:
        facts.example.setdefault("unlabeled", mask_path)


# ----------------------------------------------------------------------------- one split
def _mapped(ds: SegmentationDataset, value: int) -> int:
    """The id a raw index-mask value becomes (through the lookup table, if any)."""
    if ds.lut is None:
        return value
    return int(ds.lut[value]) if 0 <= value < 256 else ds.ignore_index


def _value_map_key(options: dict[str, Any]) -> Optional[str]:
    return "data.options.value_map" if options.get("value_map") is not None else None


def _lossy(ds: SegmentationDataset, facts: SplitFacts, vm: Optional[dict[int, int]]) -> Optional[str]:
    """The error for masks whose values look lossy, unless the value_map lists every value."""
    lossy = lossy_values(facts.raw, facts.interior, facts.lossy_files > 0)
    if lossy is None or (vm is not None and set(lossy.noise) <= set(vm)):
        return None
    return lossy_message(facts.split, lossy, ds.ignore_index, "data.options.value_map",
                         facts.lossy_files, facts.example[f"value {lossy.noise[0]}"])


def _unmapped(facts: SplitFacts, options: dict[str, Any], vm: dict[int, int], ignore: int) -> None:
    """Mask values the value_map leaves out (they become the ignore index): a warning for a few
    stray pixels, an error above UNMAPPED_SHARE of the checked pixels."""
    missing, share = unmapped_values(facts.raw, vm)
    if missing:
        facts.problems.append(("wrong" if share > UNMAPPED_SHARE else "warning", unmapped_message(
            facts.split, missing, share, options["value_map"], ignore, "data.options.value_map",
            facts.example[f"value {missing[0]}"])))


def _absent(ds: SegmentationDataset, facts: SplitFacts, options: dict[str, Any]) -> None:
    """A warning naming the classes with no pixel in the checked (training) masks."""
    absent = [c for c in range(ds.num_classes) if c != ds.ignore_index and not facts.class_pixels.get(c)]
    if absent and facts.labeled:
        facts.problems.append(("warning", absent_message(
            facts.split, facts.checked, ds.classes, absent, options.get("value_map"),
            sorted(facts.raw), "data.options.value_map", "data.check_files checks more masks")))


def _mask_findings(ds: SegmentationDataset, facts: SplitFacts, options: dict[str, Any],
                   train: bool = False) -> None:
    """Errors / warnings from the sampled mask values of one split (``train``: the training
    split, whose classes must all appear)."""
    add, split, ignore = facts.problems.append, facts.split, ds.ignore_index
    values = sorted(facts.raw)
    vm_key = _value_map_key(options)
    vm = parse_value_map(options["value_map"]) if vm_key else None
    lossy = _lossy(ds, facts, vm)
    if lossy:  # first: it explains files the loader refused (values outside the classes)
        refused = any(level == "error" for level, _ in facts.problems)
        facts.problems.insert(0, ("error" if refused else "wrong", lossy))
        return
    if ds.lut is None and ds.palette is None and values == [0, 255] and ignore == 255:
        add(("wrong", f"masks of split '{split}' hold only 0 and 255 (e.g. "
                      f"{facts.example['value 255']}) and 255 is the ignore index: every "
                      "foreground pixel would be ignored; set data.options.value_map={0: 0, 255: 1}"
                      " (2 classes), or data.options.ignore_index to a value the masks do not use"))
        return
    dropped = [v for v in values if v != ignore and _mapped(ds, v) == ignore]
    if facts.pixels and facts.labeled == 0:
        if dropped and vm_key:
            why = (f"{vm_key} maps none of the mask values {values[:10]} to a class (its keys: "
                   f"{map_keys(options['value_map'])[:10]}); give it the values the masks hold")
        elif dropped:
            why = (f"the label mapping of dataset '{ds.name.split('/')[0]}' sends every mask value "
                   f"{values[:10]} to the ignore index {ignore} (labels withheld, e.g. a benchmark "
                   "test split, or masks in another format)")
        else:
            why = (f"every pixel is the ignore index {ignore} (unlabeled masks); point data.root / the "
                   "split at labeled masks, or use a label-free stage (data: images)")
        add(("wrong", f"no labeled pixels in the {facts.checked} checked mask(s) of split '{split}' "
                      f"(e.g. {facts.example.get('unlabeled')}): {why}"))
        return
    if vm is not None:
        _unmapped(facts, options, vm, ignore)
    if train:
        _absent(ds, facts, options)
    if facts.pixels and facts.labeled / facts.pixels < LOW_LABELED_SHARE:
        add(("warning", f"only {facts.labeled / facts.pixels:.2%} of the checked pixels of split "
                        f"'{split}' are labeled: check the masks and data.options"))


def check_split(ds: SegmentationDataset, split: str, files: int,
                options: dict[str, Any] | None = None, train: bool = False) -> SplitFacts:
    """Examine up to ``files`` pairs of ``ds`` (items that are files on disk); ``train``: the
    training split (a class without a pixel in the sample is a warning)."""
    facts = SplitFacts(split)
    sample = [i for i in sample_indices(len(ds.items), files)  # generated items: nothing to read
              if isinstance(ds.items[i][0], Path) and ds.items[i][0].is_file()]
    for i in sample:
        _examine(ds, i, facts)
    if any(ds.items[i][1] is not None for i in sample):
        _mask_findings(ds, facts, options or {}, train)
    return facts


def check_splits(datasets: dict[str, Optional[SegmentationDataset]], mode: str = "error",
                 files: int = 16, options: dict[str, Any] | None = None,
                 say: Callable[[str], None] | None = None,
                 relax: str = "data.check=warn", train: str | None = None) -> list[SplitFacts]:
    """Run :func:`check_split` on every dataset given (None entries skipped).

    ``mode="error"``: raise DataError with the first error (warnings are printed first);
    ``"warn"``: print "wrong data" errors as warnings (a file the loader cannot use still
    stops); ``"off"``: do nothing. ``say`` prints a warning line (default: stderr); ``relax``
    names the setting that turns errors into warnings (in the error message); ``train`` names
    the training split (its classes must all appear in the sample, else a warning).
    """
    if mode not in CHECK_MODES:
        raise DataError(f"data.check must be one of {', '.join(CHECK_MODES)}, got '{mode}'")
    if mode == "off":
        return []
    say = say or _say
    facts = [check_split(ds, split, files, options, split == train)
             for split, ds in datasets.items() if ds is not None]
    problems = [p for f in facts for p in f.problems]
    for level, msg in problems:
        if level == "warning" or (level == "wrong" and mode == "warn"):
            say(msg)
    fatal = [(level, msg) for level, msg in problems
             if level == "error" or (level == "wrong" and mode == "error")]
    if fatal:
        level, msg = fatal[0]
        more = f" (and {len(fatal) - 1} more problem(s))" if len(fatal) > 1 else ""
        hint = f" [data check: {relax} goes on anyway]" if level == "wrong" and relax else ""
        raise DataError(f"{msg}{more}{hint}")
    return facts

