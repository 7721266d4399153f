"""The one dataset class every format builds, plus the file helpers they share.

A format module (camvid.py, voc.py, ...) only finds ``(image_path, mask_path | None)`` pairs and
knows its classes, ignore index, normalisation and label mapping; decoding, checking, caching,
transforms and normalisation all happen here, the same way for every format.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, read_file

from segkd.core.constants import IMAGENET_MEAN, IMAGENET_STD
from segkd.core.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp")

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work and are the
# documented choice here, so keep the per-call warning out of training logs.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

Item = tuple[Path, "Path | None"]
Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Tensor, Tensor]]


# ----------------------------------------------------------------------------- file helpers
def require_dir(path: str | Path, what: str = "dataset root") -> Path:
    """Return ``path`` as a Path, or raise DataError naming it if it is not a directory."""
    p = Path(path).expanduser()
    if not p.is_dir():
        link = "; it is a symbolic link that loops or points nowhere" if p.is_symlink() else ""
        raise DataError(f"{what} not found: {p} (check the dataset root / download it{link})")
    return p


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise DataError naming it if it is not a file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} not found: {p}")
    return p


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files (png/jpg/jpeg/webp, any case) in ``folder``, sorted by path."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file (a split list, codes.txt, classes.txt)."""
    text = require_file(path, "list file").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_id_list(path: Path) -> list[str]:
    """Image ids from a split list (VOC's ``ImageSets``); also reads lines of the form
    ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``."""
    return [Path(line.split()[0]).stem for line in read_lines(path)]


def require_items(items: list[Item], where: str | Path) -> list[Item]:
    """Raise DataError naming ``where`` if a split has no items."""
    if not items:
        raise DataError(f"empty split: no images found in {where}")
    return items


def build_lut(mapping: dict[int, int], ignore_index: int) -> Tensor:
    """256-entry int64 table raw value -> train id; values not in ``mapping`` -> ignore_index."""
    lut = torch.full((256,), ignore_index, dtype=torch.int64)
    for raw, tid in mapping.items():
        if not 0 <= int(raw) <= 255:
            raise DataError(f"label mapping: raw value {raw} is not in 0..255")
        lut[int(raw)] = int(tid)
    return lut


# ----------------------------------------------------------------------------- decoding
def png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None for other files.

    Colour types: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA.
    """
    if path.suffix.lower() != ".png":
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def to_uint8(image: Tensor, path: Path | str) -> Tensor:
    """A decoded image as uint8: 16-bit samples are rescaled by their bit depth (0..65535 ->
    0..255, rounded), so every later step (cache, transforms, normalisation) sees 8-bit data."""
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.uint16:
        return torch.div(image.to(torch.int32) + 128, 257, rounding_mode="floor").to(torch.uint8)
    raise DataError(f"image {path}: {image.dtype} samples are not supported (8- or 16-bit images)")


def read_image(path: Path) -> Tensor:
    """Decode an image file to uint8 [3,H,W] RGB (16-bit PNGs rescaled to 8 bits); DataError
    naming the file if it is bad."""
    try:
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from None
    return to_uint8(image, path)


def _decode_palette_png(path: Path) -> Tensor | None:
    """Palette indices of a mode-"P" PNG via PIL, or None if it is not one."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        if im.mode != "P":
            return None
        return torch.from_numpy(np.array(im, dtype=np.uint8))


def read_raw_mask(path: Path) -> Tensor:
    """Decode a mask file unchanged: [H,W] for index masks, [3,H,W] for colour masks.

    Palette PNGs give their indices (torchvision keeps them; PIL is the fallback for builds
    that expand the palette). Grey+alpha drops alpha; RGB with equal channels is grey.
    1-, 2- and 4-bit grey PNGs give their stored values (0/1 for a 1-bit mask): the decoder
    scales them to 8 bits (1 -> 255), which would turn class 1 into 255, the usual ignore index.
    """
    try:
        m = decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError, OSError) as e:
        raise DataError(f"cannot decode mask {path}: {e}") from None
    if m.shape[0] <= 2:
        header = png_header(path)
        if header is not None and header[1] == 0 and header[0] < 8:  # low-bit grey
            return m[0] // (255 // (2 ** header[0] - 1))  # 1-bit: /255, 2-bit: /85, 4-bit: /17
        return m[0]
    if path.suffix.lower() == ".png":
        idx = _decode_palette_png(path)
        if idx is not None:
            return idx
    m = m[:3]
    if torch.equal(m[0], m[1]) and torch.equal(m[0], m[2]):
        return m[0]
    return m


def palette_to_ids(rgb: Tensor, palette: Sequence[Sequence[int]], path: Path) -> Tensor:
    """Map a colour mask uint8 [3,H,W] to class ids int64 [H,W] (palette[i] = colour of id i)."""
    code = (rgb[0].long() << 16) | (rgb[1].long() << 8) | rgb[2].long()
    keys = torch.tensor([(r << 16) | (g << 8) | b for r, g, b in palette], dtype=torch.int64)
    order = torch.argsort(keys)
    pos = torch.searchsorted(keys[order], code).clamp(max=len(keys) - 1)
    found = keys[order][pos] == code
    if not bool(found.all()):
        bad = torch.unique(code[~found])[:8].tolist()
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in bad]
        raise DataError(f"mask {path}: colours {colours} are not in the class palette")
    return order[pos]


def _lut_to_numpy(lut: Tensor) -> np.ndarray:
    """The lookup table as a numpy array (uint8 when every entry fits) for fast gathering."""
    fits = bool(((lut >= 0) & (lut <= 255)).all())
    return lut.to(torch.uint8).numpy() if fits else lut.numpy()


# ----------------------------------------------------------------------------- dataset
class SegmentationDataset(Dataset):
    """Image/mask pairs -> ``{"image": float32 [3,H,W], "mask": int64 [H,W], "name": str}``.

    Masks are mapped to train ids (``lut`` for index masks, ``palette`` for colour masks) and
    checked (size, value range) before ``transform``; images are normalised after it.
    Unlabeled items (mask None) get a mask full of ``ignore_index``. With ``cache=True`` the
    decoded uint8 image and mapped mask are kept in memory (per process / DataLoader worker).
    """

    def __init__(
        self,
        *,
        items: Sequence[tuple[str | Path, str | Path | None]],
        classes: Sequence[str],
        ignore_index: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        transform: Transform | None = None,
        lut: Tensor | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        name: str = "dataset",
        cache: bool = False,
    ) -> None:
        self.items: list[Item] = [(Path(i), None if m is None else Path(m)) for i, m in items]
        if not self.items:
            raise DataError(f"dataset '{name}': empty split (no items)")
        self.classes = list(classes)
        self.ignore_index = int(ignore_index)
        self.set_normalization(mean, std)
        self.transform = transform
        self.lut = None if lut is None else torch.as_tensor(lut, dtype=torch.int64)
        if self.lut is not None and self.lut.shape != (256,):
            raise DataError(f"dataset '{name}': label lookup table must have 256 entries")
        self._lut_np = None if self.lut is None else _lut_to_numpy(self.lut)
        self.palette = None if palette is None else [tuple(int(v) for v in c) for c in palette]
        self.name = name
        self.cache = cache
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}
        # deterministic joint transform applied once per item before ``transform`` (a fixed
        # resize); with ``cache`` its output is what is kept, so it is not paid again
        self.prepare: Transform | None = None

    def set_pipeline(self, prepare: Transform | None = None, transform: Transform | None = None,
                     cache: bool = False) -> None:
        """What each decoded item goes through: ``prepare``, deterministic (the fixed resize),
        applied once per item and, with ``cache``, kept in memory as uint8; then ``transform``,
        the random rest, every time. (Set by ``DatasetSpec.open``, not by the builders.)"""
        self.prepare, self.transform, self.cache = prepare, transform, bool(cache)
        self._cache = {}

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Per-channel mean/std applied after the transforms (e.g. a config override)."""
        self.mean, self.std = tuple(mean), tuple(std)
        mean_t = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std_t = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        # (x - mean) / std as one fused multiply-add: x * (1 / std) + (-mean / std)
        self._inv_std, self._shift = 1.0 / std_t, -mean_t / std_t

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def item_name(self, i: int) -> str:
        """The name of item ``i``: its image file stem."""
        return self.items[i][0].stem

    def subset(self, indices: Sequence[int]) -> "SegmentationDataset":
        """A new dataset with ``items[i] for i in indices`` (same classes, transform, cache)."""
        indices = [int(i) for i in indices]
        new = copy.copy(self)
        new.items = [self.items[i] for i in indices]
        if not new.items:
            raise DataError(f"dataset '{self.name}': subset with no items")
        new._cache = {j: self._cache[i] for j, i in enumerate(indices) if i in self._cache}
        return new

    # ------------------------------------------------------------------ loading
    def load_raw(self, i: int) -> tuple[Tensor, Tensor]:
        """Decoded item ``i``: image uint8 [3,H,W] and mask of train ids [H,W] (before
        ``prepare``; from the cache when ``prepare`` does not change what it holds)."""
        if self.cache and self.prepare is None and i in self._cache:
            return self._cache[i]
        image, mask = self._load(i)
        return image, self._compact(mask)

    def load_prepared(self, i: int) -> tuple[Tensor, Tensor]:
        """Item ``i`` decoded and ``prepare``d: what ``transform`` starts from (cached)."""
        if self.cache and i in self._cache:
            return self._cache[i]
        image, mask = self.load_raw(i)
        if self.prepare is not None:
            img, msk = self.prepare(tv_tensors.Image(image), tv_tensors.Mask(mask))
            image, mask = img.as_subclass(Tensor), msk.as_subclass(Tensor)
        if self.cache:
            self._cache[i] = (image, mask)
        return image, mask

    def _load(self, i: int) -> tuple[Tensor, Tensor]:
        """Read and check item ``i`` from disk (subclasses without files override this)."""
        image_path, mask_path = self.items[i]
        image = read_image(image_path)
        if mask_path is None:
            return image, self._compact(torch.full(image.shape[1:], self.ignore_index))
        mask = self._read_mask(mask_path)
        if tuple(mask.shape) != tuple(image.shape[1:]):
            raise DataError(
                f"mask {mask_path} is {tuple(mask.shape)} (HxW) but its image {image_path} "
                f"is {tuple(image.shape[1:])}"
            )
        return image, mask

    def _read_mask(self, path: Path) -> Tensor:
        """Decode and map one mask file to checked train ids [H,W] (uint8 where ids fit)."""
        ids = self.map_raw(read_raw_mask(path), path)
        self.check_labels(ids, path)
        return ids

    def map_raw(self, raw: Tensor, path: Path) -> Tensor:
        """Map a decoded mask (``read_raw_mask``) to train ids [H,W], unchecked."""
        if raw.dim() == 3:
            if self.palette is None:
                raise DataError(
                    f"mask {path} is an RGB colour image; expected a single-channel index mask "
                    "(convert it, or give the dataset a colour palette)"
                )
            return palette_to_ids(raw, self.palette, path)
        if raw.dtype == torch.uint16 and int(raw.to(torch.int32).max()) <= 255:
            raw = raw.to(torch.uint8)  # a 16-bit file holding 8-bit ids
        if self.lut is not None:
            if raw.dtype != torch.uint8:
                raise DataError(f"mask {path}: {raw.dtype} values cannot use an 8-bit lookup")
            return torch.from_numpy(self._lut_np[raw.numpy()])  # numpy gathers uint8 indices fast
        return raw

    def check_labels(self, ids: Tensor, path: Path | str) -> None:
        """Raise DataError if ``ids`` holds values outside [0, C) other than ignore_index."""
        if ids.dtype == torch.uint8:  # one histogram pass instead of several comparisons
            present = torch.bincount(ids.flatten(), minlength=256).nonzero().flatten()
            values = [v for v in present.tolist() if v >= self.num_classes and v != self.ignore_index]
        else:
            ids = ids.long()
            bad = ((ids < 0) | (ids >= self.num_classes)) & (ids != self.ignore_index)
            values = torch.unique(ids[bad]).tolist() if bool(bad.any()) else []
        if values:
            raise DataError(
                f"mask {path}: label values {values[:10]} are outside [0, {self.num_classes}) "
                f"and not the ignore index {self.ignore_index}"
            )

    def _compact(self, mask: Tensor) -> Tensor:
        """Store masks as uint8 when every id fits (faster transforms, 8x smaller cache)."""
        dtype = torch.uint8 if 0 <= self.ignore_index <= 255 and self.num_classes <= 256 else torch.int64
        return mask if mask.dtype == dtype else mask.to(dtype)

    # ------------------------------------------------------------------ output
    def __getitem__(self, i: int) -> dict[str, Tensor | str]:
        image, mask = self.load_prepared(i)
        img, msk = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            img, msk = self.transform(img, msk)
        return {"image": self.normalize(img), "mask": msk.as_subclass(Tensor).to(torch.int64),
                "name": self.item_name(i)}

    def normalize(self, image: Tensor) -> Tensor:
        """uint8 (0..255) or float (0..1) [3,H,W] -> float32 normalised with mean/std."""
        x = image.as_subclass(Tensor)
        if x.dtype == torch.uint8:
            return torch.addcmul(self._shift, x.float(), self._inv_std / 255.0)
        return torch.addcmul(self._shift, x.float(), self._inv_std)

    def __repr__(self) -> str:
        return (f"SegmentationDataset(name={self.name!r}, items={len(self)}, "
                f"classes={self.num_classes}, ignore_index={self.ignore_index})")
