"""Check a dataset tree before training: ``prepare(name, root, **options) -> PrepareReport``.

Files are examined directly (no transforms): per split, images and masks are counted and paired,
every header is read (sizes, unreadable files, image/mask size mismatches), and at most
``max_masks`` evenly spaced pairs per split are decoded for the mask value histogram. Values are
compared with the dataset's classes and ignore index (after its label mapping, if any); binary
0/255 masks and RGB colour masks come with a suggested ``value_map`` / ``palette`` option for the
"folder" dataset. Every split is also loaded through segkd's own builder, whose error (if any)
is reported. ``report.ok`` is False when something would break or silently spoil training.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segkd.core.errors import SegkdError
from segkd.data import build_dataset
from segkd.data.base import read_image, read_raw_mask
from segkd.data.mask_values import LOSSY_EXTS, lossy_findings, map_findings, value_counts
from segkd.data.pairing import LayoutMeta, Pairing
from segkd.data.spec import dataset_spec

LOSSY = LOSSY_EXTS


@dataclass
class Finding:
    """One problem or note: level "error" (report not ok), "warning" or "info"."""

    level: str
    split: str
    message: str


@dataclass
class SplitReport:
    """What one split holds. Sizes are (H, W); ``histogram`` is raw mask value -> pixels."""

    split: str
    images: int = 0
    masks: int = 0
    pairs: int = 0
    images_without_masks: list[str] = field(default_factory=list)
    masks_without_images: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    size_min: tuple[int, int] | None = None
    size_max: tuple[int, int] | None = None
    unlabeled: int = 0  # images a builder lists without a mask (unlabeled datasets)
    generated: int = 0  # items that are not files (made by the dataset itself, e.g. synthetic)
    lossy_masks: int = 0
    masks_checked: int = 0
    rgb_masks: int = 0
    histogram: dict[int, int] = field(default_factory=dict)
    interior: dict[int, int] = field(default_factory=dict)  # value -> pixels whose 4 neighbours match
    colours: dict[tuple[int, int, int], int] = field(default_factory=dict)
    load_error: str | None = None


@dataclass
class PrepareReport:
    """The result of ``prepare``: per-split facts, findings and suggested dataset options."""

    name: str
    root: str
    classes: list[str]
    ignore_index: int
    splits: list[SplitReport]
    findings: list[Finding] = field(default_factory=list)
    suggestions: dict[str, Any] = field(default_factory=dict)
    label_map: dict[int, int] | None = None  # raw mask value -> id, where the format maps values
    levels: list[int] | None = None  # the levels of masks that look lossy (JPEG noise around them)
    applied: str | None = None  # the suggested options this report was judged with (with_suggestions)

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (colour keys as "r,g,b")."""
        d = asdict(self)
        for s in d["splits"]:
            s["colours"] = {",".join(map(str, c)): n for c, n in s["colours"].items()}
        return {**d, "ok": self.ok}


# ----------------------------------------------------------------------------- builders
def _layout_meta(name: str, root: Path, options: dict) -> LayoutMeta:
    """Classes and label mapping from the dataset's spec, without building a split."""
    meta = dataset_spec(name).meta
    return (meta(root, options) if meta is not None else None) or LayoutMeta([], 255)


def _load_splits(name: str, root: Path, splits: list[str],
                 options: dict) -> tuple[dict, dict, LayoutMeta | None]:
    """Build each split with segkd's builder: (datasets, load errors, metadata of the first)."""
    datasets, errors, meta = {}, {}, None
    for split in splits:
        try:
            ds = build_dataset(name, root=root, split=None if split == "all" else split, **options)
        except SegkdError as e:
            errors[split] = str(e)
            continue
        datasets[split] = ds
        lut = None if ds.lut is None else ds.lut.numpy()
        meta = meta or LayoutMeta(ds.classes, ds.ignore_index, lut, ds.palette)
    return datasets, errors, meta


# ----------------------------------------------------------------------------- file checks
def _header(path: Path) -> tuple[int, int] | str:
    """(H, W) from the file header, or the reason it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError, SyntaxError) as e:
        return f"{path}: {e}"


def _decode_pair(image: Path, mask: Path) -> tuple[np.ndarray | None, bool, str | None]:
    """Decode a pair: (mask values [H,W] or packed RGB, is_rgb, error)."""
    try:
        read_image(image)
        raw = read_raw_mask(mask).numpy()
    except SegkdError as e:
        return None, False, str(e)
    if raw.ndim == 3:
        rgb = raw.astype(np.int64)
        return (rgb[0] << 16) | (rgb[1] << 8) | rgb[2], True, None
    return raw, False, None


def _sample(pairs: list, limit: int | None) -> list:
    """At most ``limit`` evenly spaced pairs (all when limit is None / 0 / large enough)."""
    if not limit or len(pairs) <= limit:
        return pairs
    return [pairs[i] for i in np.unique(np.linspace(0, len(pairs) - 1, limit).round().astype(int))]


def _scan_sizes(rep: SplitReport, pairs: list[tuple[Path, Path]]) -> None:
    """Headers of every pair: sizes of images, unreadable files, image/mask size mismatches."""
    sizes = []
    for image, mask in pairs:
        hi, hm = _header(image), _header(mask)
        rep.unreadable += [h for h in (hi, hm) if isinstance(h, str)]
        if isinstance(hi, tuple):
            sizes.append(hi)
            if isinstance(hm, tuple) and hm != hi:
                rep.size_mismatch.append(f"{mask} is {hm} but {image.name} is {hi}")
    if sizes:
        rep.size_min, rep.size_max = min(sizes), max(sizes)


def _scan_values(rep: SplitReport, pairs: list[tuple[Path, Path]], limit: int | None) -> None:
    """Decode sampled pairs; accumulate the value histogram (and interior pixels per value) and
    the colours of RGB masks."""
    values, interior, colours = Counter(), Counter(), Counter()
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for arr, is_rgb, error in pool.map(lambda p: _decode_pair(*p), _sample(pairs, limit)):
            if error:
                rep.unreadable.append(error)
                continue
            rep.masks_checked += 1
            rep.rgb_masks += is_rgb
            if arr.dtype == np.uint8:
                hist, inner = value_counts(arr)
                uniq = np.flatnonzero(hist)
                counts = hist[uniq]
                interior.update(dict(zip(uniq.tolist(), inner[uniq].tolist())))
            else:
                uniq, counts = np.unique(arr, return_counts=True)
            (colours if is_rgb else values).update(dict(zip(uniq.tolist(), counts.tolist())))
    rep.histogram = dict(sorted(values.items()))
    rep.interior = {v: interior[v] for v in rep.histogram if v in interior}
    rep.colours = {((c >> 16) & 255, (c >> 8) & 255, c & 255): n for c, n in colours.most_common()}


def _scan_split(split: str, pairing: Pairing, limit: int | None) -> SplitReport:
    pairs, no_mask, no_image = pairing
    rep = SplitReport(split, images=len(pairs) + len(no_mask), masks=len(pairs) + len(no_image),
                      pairs=len(pairs), images_without_masks=[str(p) for p in no_mask],
                      masks_without_images=[str(p) for p in no_image])
    rep.lossy_masks = sum(m.suffix.lower() in LOSSY for _, m in pairs)
    _scan_sizes(rep, pairs)
    _scan_values(rep, pairs, limit)
    return rep


def _generic_split(split: str, ds: Any, limit: int | None) -> SplitReport:
    """A split of a format without a scanner, from its builder's items (files only)."""
    on_disk = [(i, m) for i, m in ds.items if i.is_file()]
    pairs = [(i, m) for i, m in on_disk if m is not None]
    rep = SplitReport(split, images=len(ds.items), masks=len(pairs), pairs=len(pairs),
                      unlabeled=len(on_disk) - len(pairs), generated=len(ds.items) - len(on_disk))
    _scan_sizes(rep, pairs)
    _scan_values(rep, pairs, limit)
    return rep


# ----------------------------------------------------------------------------- findings
def _examples(items: list[str], k: int = 3) -> str:
    return ", ".join(items[:k]) + (f" ... ({len(items)} in all)" if len(items) > k else "")


def _split_findings(rep: SplitReport) -> list[Finding]:
    """Pairing, readability, size and count problems of one split."""
    checks = [
        ("error", rep.load_error, f"segkd cannot load this split: {rep.load_error}"),
        ("error", rep.images_without_masks, f"{len(rep.images_without_masks)} image(s) without a mask: "
                                            f"{_examples(rep.images_without_masks)}"),
        ("warning", rep.masks_without_images, f"{len(rep.masks_without_images)} mask(s) / listed id(s) "
                                              f"without an image: {_examples(rep.masks_without_images)}"),
        ("error", rep.unreadable, f"{len(rep.unreadable)} unreadable file(s): {_examples(rep.unreadable)}"),
        ("error", rep.size_mismatch, f"{len(rep.size_mismatch)} mask(s) of another size than their "
                                     f"image: {_examples(rep.size_mismatch)}"),
        ("error", not rep.load_error and rep.pairs == rep.unlabeled == rep.generated == 0,
         "no image/mask pairs found"),
        ("info", rep.unlabeled, f"{rep.unlabeled} unlabeled image(s)"),
        ("info", rep.generated, f"{rep.generated} item(s) generated by the dataset, not files: not checked"),
        ("info", rep.masks_checked < rep.pairs, f"value histogram from {rep.masks_checked} of "
                                                f"{rep.pairs} masks (max_masks)"),
    ]
    return [Finding(level, rep.split, msg) for level, cond, msg in checks if cond]


def _ids(values: list[int], meta: LayoutMeta) -> dict[int, int]:
    """raw mask value -> id the dataset would use (through its lookup table, if any)."""
    if meta.lut is None:
        return {v: v for v in values}
    return {v: int(meta.lut[v]) if 0 <= v < 256 else meta.ignore_index for v in values}


def _suggest_value_map(values: set[int], ignore: int) -> dict[int, int]:
    """Consecutive ids for the raw values seen (0/255 -> {0: 0, 255: 1}); ignore stays ignored."""
    keep = values if values == {0, 255} or ignore not in values else values - {ignore}
    return {v: i for i, v in enumerate(sorted(keep))}


def _value_findings(report: PrepareReport, meta: LayoutMeta, value_map: dict | None) -> None:
    """The value_map's coverage and the classes never seen in the training masks."""
    train = [r for r in report.splits if r.split == "train"] or report.splits
    seen = {i for r in train for i in _ids(list(r.histogram), meta).values()}
    report.findings += [Finding(*f) for f in map_findings(report.splits, train, seen, meta.classes,
                                                          meta.ignore_index, value_map)]


def _index_findings(report: PrepareReport, meta: LayoutMeta, value_map: dict | None = None) -> None:
    """Mask values against the classes and ignore index (the value_map's coverage, classes
    never seen); value_map suggestion. Lossy masks get their own error (no suggestion: a map of
    their noise values would make classes of it)."""
    n, ignore, add = len(meta.classes), meta.ignore_index, report.findings.append
    seen: set[int] = set()
    for rep in report.splits:
        ids = _ids(list(rep.histogram), meta)
        seen |= set(ids.values())
        if rep.histogram and not any(0 <= i < n for i in ids.values()):
            add(Finding("warning", rep.split, "no labeled pixels in the checked masks (all ignore)"))
    values = {v for rep in report.splits for v in rep.histogram}
    ids = _ids(sorted(values), meta)
    outside = sorted(v for v, i in ids.items() if not 0 <= i < n and i != ignore)
    binary = meta.lut is None and values == {0, 255} and ignore == 255
    if report.levels is not None:
        return
    if not (binary or outside):
        if values:
            _value_findings(report, meta, value_map)
        return
    mapping = _suggest_value_map(values, ignore)
    report.suggestions["value_map"] = mapping
    where = ", ".join(r.split for r in report.splits if set(r.histogram) & (set(outside) or {255}))
    how = (f"set the option value_map={mapping}" if report.name == "folder" else
           f"these masks do not follow the '{report.name}' format (the 'folder' dataset takes "
           f"value_map={mapping})")
    if len(mapping) > n:
        how += f" and give {len(mapping)} classes (classes / num_classes / classes.txt)"
    what = ("masks hold only 0 and 255, and 255 is the ignore index: every foreground pixel would "
            "be ignored" if binary else
            f"mask values {outside[:10]} are outside the classes 0..{n - 1} and not the ignore "
            f"index {ignore}")
    add(Finding("error", where, f"{what}; {how}"))


def _rgb_findings(report: PrepareReport, meta: LayoutMeta) -> None:
    """RGB colour masks: palette suggestion, or colours missing from the given palette."""
    colours = Counter()
    for rep in report.splits:
        colours.update(rep.colours)
    where = ", ".join(r.split for r in report.splits if r.rgb_masks)
    if not colours:
        return
    if meta.palette is not None:
        unknown = [c for c in colours if c not in {tuple(p) for p in meta.palette}]
        if unknown:
            report.findings.append(Finding("error", where,
                                           f"mask colours {unknown[:8]} are not in the palette"))
        return
    if len(colours) > 256:
        msg = f"RGB masks with {len(colours)} colours: not colour-coded class masks (lossy compression?)"
    else:
        report.suggestions["palette"] = [list(c) for c in sorted(colours)]
        msg = (f"masks are RGB colour images ({len(colours)} colours), not index masks; convert them, "
               "or give the 'folder' dataset palette=<suggested palette> (palette[i] = colour of "
               "class i: reorder it to match your classes)")
    report.findings.append(Finding("error", where, msg))


# ----------------------------------------------------------------------------- entry points
def prepare(name: str, root: str | Path, *, max_masks: int | None = 500,
            splits: list[str] | None = None, **options: Any) -> PrepareReport:
    """Examine dataset ``name`` under ``root`` (builder ``options`` as for build_dataset).

    ``max_masks``: decode at most this many masks per split for the value histogram (None or 0:
    all). ``splits``: only these splits (default: every split found).
    """
    root = Path(root).expanduser()
    spec = dataset_spec(name)  # an unknown name raises with suggestions
    spec.check_options(options, "")
    scanner, pairings = spec.scan, None
    if scanner is not None:
        try:
            pairings = scanner(root, options) if root.is_dir() else {}
        except SegkdError:
            pairings = {}  # the builder's own error explains the layout problem
    names = list(pairings or []) or (["train"] if scanner else ["train", "val", "test"])
    names = [s for s in names if splits is None or s in splits] or list(splits or [])
    datasets, errors, meta = _load_splits(name, root, names, options)
    if scanner is None and datasets:  # formats without a scanner: keep the splits that load
        names, errors = [s for s in names if s in datasets], {}
    reports = []
    for split in names:
        if scanner is not None:
            rep = _scan_split(split, pairings.get(split, ([], [], [])), max_masks)
        else:
            rep = (_generic_split(split, datasets[split], max_masks) if split in datasets
                   else SplitReport(split))
        rep.load_error = errors.get(split)
        reports.append(rep)
    meta = meta or _layout_meta(name, root, options)
    return _judge(name, root, reports, meta, options)


def _judge(name: str, root: Path, reports: list[SplitReport], meta: LayoutMeta,
           options: dict[str, Any]) -> PrepareReport:
    """The report of scanned ``reports`` under the dataset's ``meta`` and ``options``."""
    report = PrepareReport(name, str(root), meta.classes, meta.ignore_index, reports)
    if meta.lut is not None:
        report.label_map = {v: int(i) for v, i in enumerate(meta.lut) if i != meta.ignore_index}
    for rep in reports:
        report.findings += _split_findings(rep)
    value_map = options.get("value_map")
    found, report.levels = lossy_findings(report.splits, meta.ignore_index, value_map)
    report.findings += [Finding(*f) for f in found]
    _index_findings(report, meta, value_map)
    _rgb_findings(report, meta)
    return report


def rejudge(report: PrepareReport, options: dict[str, Any]) -> PrepareReport:
    """The splits scanned for ``report`` judged again under other builder ``options`` (no file
    is read again; each split is listed by the builder again)."""
    root = Path(report.root)
    _, errors, meta = _load_splits(report.name, root, [r.split for r in report.splits], options)
    reports = [replace(r, load_error=errors.get(r.split)) for r in report.splits]
    meta = meta or _layout_meta(report.name, root, options)
    return _judge(report.name, root, reports, meta, options)
