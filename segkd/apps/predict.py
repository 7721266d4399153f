"""``segkd predict``: masks for images and folders, as colour PNGs + overlays (with a legend of
the class colours, legend.png), raw ids, or benchmark-server submissions (Cityscapes labelIds,
VOC palette PNGs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segkd.core.constants import IMAGENET_MEAN, IMAGENET_STD
from segkd.core.errors import SegkdError
from segkd.core.writable import check_output_dir
from segkd.data.base import IMAGE_EXTS, list_images, read_image
from segkd.eval.inference import InferenceSpec, predict_logits


def _predictor(path: str):
    """(callable images -> logits, meta) for a segkd checkpoint or an exported .onnx."""
    if path.endswith(".onnx"):
        from segkd.apps.export import load_predictor

        return load_predictor(path)
    from segkd.models.spec import model_from_checkpoint

    model, meta, ckpt = model_from_checkpoint(path)
    model.eval()
    meta = dict(meta)
    meta.setdefault("size", ((ckpt.get("config") or {}).get("data") or {}).get("size"))
    return model, meta


def _inputs(path: Path) -> list[Path]:
    """The image files to predict: ``path`` itself or the images under a folder."""
    exts = ", ".join(IMAGE_EXTS)
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTS:
            raise SegkdError(f"{path}: unsupported image type '{path.suffix}'; supported: {exts}")
        return [path]
    if path.is_dir():
        files = list_images(path, recursive=True)
        if files:
            return files
        others = sorted({p.suffix.lower() or p.name for p in path.rglob("*") if p.is_file()})
        found = f" (found only: {', '.join(others[:8])})" if others else " (the folder is empty)"
        raise SegkdError(f"no images found in {path}{found}; supported: {exts}")
    raise SegkdError(f"no such image or folder: {path}")


def _all_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """The images of every input (files and folders), each once; two images whose outputs would
    share a name (the same stem) are an error naming both."""
    files = list(dict.fromkeys(f for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)
                               for f in _inputs(Path(i))))
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise SegkdError(f"{stems[f.stem]} and {f} would write the same output names "
                             f"({f.stem}_*.png); predict them into separate --out folders")
        stems[f.stem] = f
    return files


def write_legend(classes: Sequence[str], palette, path: Path) -> Path:
    """A PNG of the class colours with their names (the key to the colour masks and overlays)."""
    from segkd.apps.report.figures import legend_figure, to_png

    path.write_bytes(to_png(legend_figure(list(classes), palette)))
    return path


def predict_paths(checkpoint: str, inputs: str | Sequence[str], out_dir: str,
                  size: Optional[tuple[int, int]] = None, fmt: str = "color", flip: bool = False) -> int:
    """Predict every image of ``inputs`` (image files and folders); write results to
    ``out_dir`` (the colour format also writes legend.png); return the count.

    The format, the inputs and the output folder are checked before the model is loaded; a
    failure part-way says which outputs were written."""
    from segkd.data import submission

    if fmt not in ("color", "ids", *submission.FORMATS):
        raise SegkdError(f"unknown --format '{fmt}': color | ids | cityscapes | voc")
    files = _all_inputs(inputs)
    out = check_output_dir(out_dir, "predictions to")
    fwd, meta = _predictor(checkpoint)
    if fmt in submission.FORMATS:  # before anything is written
        submission.check_model_classes(meta, fmt, checkpoint)
    size = size or (tuple(meta["size"]) if meta.get("size") else None)
    mean = torch.tensor(meta.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(meta.get("std", IMAGENET_STD)).view(1, 3, 1, 1)
    palette = submission.class_palette(meta.get("classes") or int(meta.get("num_classes", 21)))
    spec = InferenceSpec(flip=flip)
    done: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        if fmt == "color":
            classes = meta.get("classes") or [f"class {i}" for i in range(len(palette))]
            write_legend(classes, palette, out / "legend.png")
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
            done.append(f)
    except (SegkdError, OSError) as err:
        raise SegkdError(f"{_reason(err)} ({_written(done, len(files), out)})") from None
    return len(files)


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, SegkdError):
        return f"cannot write to {err.filename or 'the output folder'}: {err.strerror or err}"
    return str(err)


def _written(done: list[Path], total: int, out: Path) -> str:
    """Which predictions a failed run left: none, or the count and the first / last image."""
    if not done:
        return f"no prediction written to {out}"
    names = done[0].name if len(done) == 1 else f"{done[0].name} ... {done[-1].name}"
    return f"predictions for {len(done)} of {total} images were written to {out}: {names}"


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
