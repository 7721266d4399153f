"""SBD (Hariharan et al. 2011) -> VOC "train_aug": SegmentationClassAug PNGs and train_aug.txt.

SBD's ``cls/<id>.mat`` are MATLAB files (struct ``GTcls`` with field ``Segmentation``, an
``[H,W]`` array of class indices 0..20); reading them needs scipy (``scipy.io.loadmat``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from rich.progress import track

from segkd.core.console import console, say
from segkd.core.errors import DataError, SegkdError
from segkd.data.base import read_id_list

MaskReader = Callable[[Path], np.ndarray]


def sbd_mask_reader() -> MaskReader:
    """A reader ``path -> uint8 [H,W]`` for SBD ``cls/*.mat``; SegkdError if scipy is missing."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise SegkdError(
            "converting SBD needs scipy: its masks (benchmark_RELEASE/dataset/cls/*.mat) are MATLAB "
            "files read with scipy.io.loadmat, and scipy is not installed in this environment. "
            "Run `pip install scipy` in it, then `segkd download sbd --root ROOT` again "
            "(nothing was downloaded for SBD yet)."
        ) from None

    def read(path: Path) -> np.ndarray:
        try:
            return np.asarray(loadmat(str(path))["GTcls"][0]["Segmentation"][0], dtype=np.uint8)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise DataError(f"cannot read SBD mask {path}: {e}") from None
    return read


def train_aug_ids(voc: Path, sbd: Path) -> list[str]:
    """(VOC train + SBD train + SBD val) minus VOC val, sorted (10582 ids for the official sets)."""
    sets = voc / "ImageSets" / "Segmentation"
    val = set(read_id_list(sets / "val.txt"))
    ids = read_id_list(sets / "train.txt") + read_id_list(sbd / "train.txt") + read_id_list(sbd / "val.txt")
    return sorted(i for i in set(ids) if i not in val)


def _aug_mask(voc: Path, sbd: Path, image_id: str, read_mask: MaskReader) -> np.ndarray | None:
    """VOC's own mask indices where it has one (finer, 255 borders), else SBD's; None if neither."""
    voc_mask = voc / "SegmentationClass" / f"{image_id}.png"
    if voc_mask.is_file():
        with Image.open(voc_mask) as im:
            return np.array(im if im.mode in ("P", "L") else im.convert("L"), dtype=np.uint8)
    mat = sbd / "cls" / f"{image_id}.mat"
    return read_mask(mat) if mat.is_file() else None


def build_train_aug(voc: Path, sbd: Path, read_mask: MaskReader,
                    progress: bool = True) -> list[str]:
    """Write ``SegmentationClassAug/<id>.png`` (grey index masks) and
    ``ImageSets/Segmentation/train_aug.txt`` into the VOC2012 folder ``voc``; return the ids.

    Ids without a VOC JPEG are left out (with a warning); an id with no mask is a DataError.
    ``progress``: show a progress bar (off under ``segkd -q``).
    """
    ids = train_aug_ids(voc, sbd)
    no_image = {i for i in ids if not (voc / "JPEGImages" / f"{i}.jpg").is_file()}
    if no_image:
        say(f"warning: {len(no_image)} SBD ids have no VOC image, left out: {sorted(no_image)[:5]}")
        ids = [i for i in ids if i not in no_image]
    out = voc / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    missing = []
    for image_id in track(ids, description="SegmentationClassAug", console=console, disable=not progress):
        mask = _aug_mask(voc, sbd, image_id, read_mask)
        if mask is None:
            missing.append(image_id)
            continue
        Image.fromarray(mask).save(out / f"{image_id}.png")
    if missing:
        raise DataError(f"{len(missing)} train_aug ids have neither {voc / 'SegmentationClass'}/<id>.png "
                        f"nor {sbd / 'cls'}/<id>.mat: {missing[:5]}")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(ids) + "\n")
    say(f"wrote {len(ids)} masks to {out} and ImageSets/Segmentation/train_aug.txt")
    return ids
