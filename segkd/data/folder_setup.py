"""``segkd prepare folder``: find a folder dataset's layout and write a config that trains on it.

:func:`detect_layout` guesses the image and mask sub-folder names and the mask name suffix from
the files; :func:`suggest_config` turns a :class:`~segkd.data.prepare.PrepareReport` (with the
``value_map`` / ``palette`` it suggests) into a ready-to-run config; :func:`config_text` renders
it as commented YAML.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from segkd.data.base import list_images
from segkd.data.mask_values import binning_map, value_map_text

IMAGE_DIRS = ("images", "image", "imgs", "img", "jpegimages", "inputs", "input", "rgb", "raw", "x")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "annotation", "annots", "annot",
             "gt", "groundtruth", "ground_truth", "segmentationclass", "targets", "target", "y")
MAX_SIDE = 512  # suggested input size: the smallest image, scaled to at most this side


def _pick(root: Path, names: tuple[str, ...]) -> str | None:
    """The first sub-folder of ``root`` whose lower-cased name is in ``names`` (in that order)."""
    present = {d.name.lower(): d.name for d in root.iterdir() if d.is_dir()} if root.is_dir() else {}
    return next((present[n] for n in names if n in present), None)


def _files(folder: Path) -> list[Path]:
    """Images of ``folder``, or of its first split sub-folder when it has split folders."""
    if not folder.is_dir():
        return []
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir())
    return list_images(subdirs[0]) if subdirs else list_images(folder)


def detect_suffix(images: list[Path], masks: list[Path], limit: int = 200) -> str:
    """The text masks add to their image's stem (``"_mask"`` for ``x.jpg`` / ``x_mask.png``):
    the most common shortest suffix over at most ``limit`` masks ("" when stems match)."""
    stems = {p.stem for p in images}
    counts: Counter = Counter()
    for mask in masks[:limit]:
        if mask.stem in stems:
            counts[""] += 1
            continue
        for k in range(len(mask.stem) - 1, 0, -1):  # longest image-stem prefix first
            if mask.stem[:k] in stems:
                counts[mask.stem[k:]] += 1
                break
    return counts.most_common(1)[0][0] if counts else ""


def detect_layout(root: Path, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Folder options (``images``, ``masks``, ``mask_suffix``) that differ from the defaults,
    guessed from the files under ``root``; options in ``given`` are kept as they are."""
    given = given or {}
    images = given.get("images") or _pick(root, IMAGE_DIRS) or "images"
    masks = given.get("masks") or _pick(root, MASK_DIRS) or "masks"
    suffix = given.get("mask_suffix")
    if suffix is None:
        suffix = detect_suffix(_files(root / images), _files(root / masks))
    found = {"images": images, "masks": masks, "mask_suffix": suffix}
    defaults = {"images": "images", "masks": "masks", "mask_suffix": ""}
    return {k: v for k, v in found.items() if k not in given and v != defaults[k]}


# ----------------------------------------------------------------------------- config
def class_count(report: Any, options: dict[str, Any]) -> int:
    """Classes implied by the options or, failing them, by the mask values seen (0/255 masks:
    2; RGB masks: one per colour; lossy masks: one per level; else the largest value that is not
    the ignore index, + 1)."""
    ignore = int(options.get("ignore_index", 255))
    if options.get("value_map"):
        return len({int(v) for v in options["value_map"].values()} - {ignore})
    if options.get("palette"):
        return len(options["palette"])
    if getattr(report, "levels", None):  # values invented by compression do not count
        return len(set(binning_map(report.levels, ignore).values()) - {ignore}) or 2
    values = {v for s in report.splits for v in s.histogram}
    colours = {c for s in report.splits for c in s.colours}
    if colours and not values:
        return len(colours)
    if values == {0, 255}:
        return 2
    values -= {ignore}
    return max(values) + 1 if values else 2


def _size(report: Any) -> list[int] | None:
    """(H, W): the smallest image scaled to at most MAX_SIDE, in multiples of 32."""
    sizes = [s.size_min for s in report.splits if s.size_min]
    if not sizes:
        return None
    h, w = min(sizes)
    scale = min(1.0, MAX_SIDE / max(h, w))
    return [max(32, int(h * scale) // 32 * 32), max(32, int(w * scale) // 32 * 32)]


def _splits(report: Any) -> tuple[str, str | None, str | None, int]:
    """(train, val, test, training images) from the splits the report found."""
    found = {s.split: s.pairs for s in report.splits}
    if "train" not in found:  # a flat folder: train/val drawn by val_fraction
        total = sum(found.values())
        return "train", "val", None, total - max(1, round(total * 0.2))
    val = "val" if "val" in found else None
    return "train", val, "test" if "test" in found else None, found["train"]


def suggest_config(report: Any, root: Path, options: dict[str, Any]) -> dict[str, Any]:
    """A config that trains a UNet on the folder dataset of ``report`` (its suggested
    ``value_map`` / ``palette`` applied, ``num_classes`` given when there are no class names)."""
    opts = {**options, **report.suggestions}
    if not opts.get("classes") and not (root / "classes.txt").is_file():
        opts["num_classes"] = class_count(report, opts)
    train, val, test, n_train = _splits(report)
    data: dict[str, Any] = {"name": "folder", "root": str(root.resolve()), "train_split": train,
                            "val_split": val, "test_split": test, "size": _size(report),
                            "batch_size": max(1, min(8, n_train)), "options": opts}
    return {
        "name": root.resolve().name or "folder",
        "data": {k: v for k, v in data.items() if v is not None or k == "val_split"},
        "model": {"arch": "unet", "encoder": "kd_resnet18"},
        "trainer": {"precision": "auto"},  # bf16 where the device computes it natively, else fp32
        "stages": [{"name": "train", "epochs": 50, "terms": [{"loss": "ce"}],
                    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
                    "schedule": {"name": "poly"}}],
        "eval": {"splits": [s for s in (val, test) if s]},
    }


def with_suggestions(report: Any, options: dict[str, Any]) -> Any:
    """``report`` (a PrepareReport) judged again with its suggested options applied, as the
    suggested config applies them: the errors they fix become "fixed" findings (what was found,
    and the option the config sets), ``report.applied`` names the options."""
    from segkd.data.prepare import Finding, rejudge

    if not report.suggestions:
        return report
    new = rejudge(report, {**options, **report.suggestions})
    sets = ", ".join(f"palette ({len(v)} colours; palette[i] is class i: reorder it to match your "
                     "classes)" if k == "palette" else f"{k}={value_map_text(v)}"
                     for k, v in report.suggestions.items())
    still = {f.message for f in new.findings if f.level == "error"}
    # a finding says "what was found; what to do": keep the first part, then what the config does
    fixed = [Finding("fixed", f.split, f"{f.message.split('; ')[0]}: the suggested config sets {sets}")
             for f in report.findings if f.level == "error" and f.message not in still]
    new.findings = fixed + new.findings
    new.suggestions, new.applied = report.suggestions, sets
    return new


def config_text(config: dict[str, Any], root: Path, ok: bool, applied: str | None = None) -> str:
    """The config as YAML with a header saying where it comes from, what it applies from the
    report (``applied``) and what to review."""
    head = [f"# segkd config for {root.resolve()} (written by `segkd prepare folder`).",
            "# Review the class count / names, data.size and the epochs, then:",
            "#   segkd train THIS_FILE"]
    if applied:
        head.append(f"# It sets {applied}, as the report suggests (see its 'fixed' findings).")
    if not ok:
        head.append("# The report found errors this config does not fix: segkd train refuses the"
                    " data until they are fixed (see the report).")
    return "\n".join(head) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
