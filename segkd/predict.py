"""``segkd predict``: masks for images or a folder, as colour PNGs + overlays, raw ids, or
benchmark-server submissions (Cityscapes labelIds, VOC palette PNGs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data.base import list_images, read_image
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .errors import SegkdError
from .eval.inference import InferenceSpec, predict_logits


def _predictor(path: str):
    """(callable images -> logits, meta) for a segkd checkpoint or an exported .onnx."""
    if path.endswith(".onnx"):
        from .export import load_predictor

        return load_predictor(path)
    from .distill.distiller import _logits
    from .engine.build import model_from_checkpoint

    model, meta, ckpt = model_from_checkpoint(path)
    model.eval()
    meta = dict(meta)
    meta.setdefault("size", ((ckpt.get("config") or {}).get("data") or {}).get("size"))
    return (lambda x: _logits(model(x))), meta


def _inputs(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = list_images(path, recursive=True)
        if files:
            return files
    raise SegkdError(f"no images found at {path}")


def predict_paths(checkpoint: str, inputs: str, out_dir: str, size: Optional[tuple[int, int]] = None,
                  fmt: str = "color", flip: bool = False) -> int:
    """Predict every image under ``inputs``; write results to ``out_dir``; return the count."""
    from .data import submission

    if fmt not in ("color", "ids", *submission.FORMATS):
        raise SegkdError(f"unknown --format '{fmt}': color | ids | cityscapes | voc")
    fwd, meta = _predictor(checkpoint)
    if fmt in submission.FORMATS:  # before anything is written
        submission.check_model_classes(meta, fmt, checkpoint)
    size = size or (tuple(meta["size"]) if meta.get("size") else None)
    mean = torch.tensor(meta.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(meta.get("std", IMAGENET_STD)).view(1, 3, 1, 1)
    palette = submission.class_palette(meta.get("classes") or int(meta.get("num_classes", 21)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _inputs(Path(inputs))
    spec = InferenceSpec(flip=flip)
    for f in files:
        img = read_image(f)  # uint8 [3,H,W]
        x = img.unsqueeze(0).float() / 255.0
        if size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - mean) / std
        with torch.no_grad():
            logits = predict_logits(fwd, x, spec, out_size=tuple(img.shape[-2:]))
        ids = logits.argmax(1)[0].to(torch.uint8).numpy()
        _write(ids, img, f, out, fmt, palette, submission)
    return len(files)


def _write(ids: np.ndarray, img: torch.Tensor, f: Path, out: Path, fmt: str, palette, submission) -> None:
    from PIL import Image

    if fmt in ("cityscapes", "voc"):
        submission.write_submission(ids, f.stem, out, fmt)
    elif fmt == "ids":
        Image.fromarray(ids).save(out / f"{f.stem}.png")
    elif fmt == "color":
        Image.fromarray(submission.colorize(ids, palette)).save(out / f"{f.stem}_mask.png")
        rgb = img.permute(1, 2, 0).numpy()
        Image.fromarray(submission.overlay(rgb, ids, palette, 0.5)).save(out / f"{f.stem}_overlay.png")
    else:
        raise SegkdError(f"unknown --format '{fmt}': color | ids | cityscapes | voc")
