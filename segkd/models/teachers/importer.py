"""Import published teacher checkpoints into segkd, strictly and without unsafe unpickling.

    model, meta = load_teacher_checkpoint("deeplab-resnet.pth.tar", "jfzhang95-deeplabv3plus")
    import_teacher("cityscapes_best.pth", "nvidia-deepwv3plus", "teacher.pt")
    model, meta = segkd.load_model("teacher.pt")  # any segkd checkpoint, in eval mode

Every file is read with ``torch.load(weights_only=True)``. The real containers hold numpy float
scalars (``best_pred`` / ``mean_iu`` come from ``np.nanmean``), which ``weights_only`` refuses by
default; only numpy's scalar/dtype reconstructors are allow-listed for that, nothing else.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from segkd.core.checkpoint import load_strict, model_checkpoint, save_checkpoint
from segkd.core.constants import IMAGENET_MEAN, IMAGENET_STD
from segkd.core.errors import CheckpointError
from segkd.core.registry import MODELS
from segkd.models.teachers import deeplab_resnet as _deeplab  # noqa: F401  (registers MODELS)
from segkd.models.teachers import wider_resnet as _wider  # noqa: F401

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle"]


@dataclass(frozen=True)
class TeacherFormat:
    """How one published checkpoint maps onto a registered architecture."""

    arch: str  # name in MODELS
    kwargs: dict[str, Any]  # builder arguments besides num_classes
    classes: list[str]
    classifier_key: str  # weight whose first dim is the class count
    output_stride: int
    extras: tuple[str, ...] = field(default=())  # scalar container entries kept in meta


FORMATS: dict[str, TeacherFormat] = {
    "jfzhang95-deeplabv3plus": TeacherFormat(
        "jfzhang95_deeplabv3plus", {"backbone": "resnet101", "output_stride": 16}, VOC_CLASSES,
        "decoder.last_conv.8.weight", 16, ("epoch", "best_pred")),
    "nvidia-deepwv3plus": TeacherFormat(
        "deepwv3plus", {}, CITYSCAPES_CLASSES, "final.6.weight", 8,
        ("epoch", "mean_iu", "command")),
}


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar reconstruction, under the names numpy 1.x and 2.x pickles use."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(c)) for c in ("f8", "f4", "i8", "i4", "b1")]
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *dtypes]


def _refusal_detail(err: Exception) -> str:
    """The 'Unsupported global: GLOBAL x.y' line of torch's refusal (its advice is to go unsafe)."""
    lines = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln]
    return lines[0] if lines else str(err).splitlines()[0]


def safe_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on CPU; errors become CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True): it holds Python objects other than "
            f"tensors and plain values, and segkd never unpickles arbitrary code. Re-save only the "
            f"state dict (torch.save(ckpt['state_dict'], 'weights.pth')) in a trusted environment "
            f"and import that file. Detail: {_refusal_detail(err)}") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err


def extract_state_dict(obj: Any, path: str | os.PathLike = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The state dict of a container (``obj['state_dict']``) or bare dict; drops ``module.``."""
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping) or not sd or not all(
            isinstance(v, torch.Tensor) for v in sd.values()):
        top = sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: no state dict found (expected a 'state_dict' entry or a "
                              f"bare name->tensor mapping); top level: {top}")
    if all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _spec(fmt: str) -> TeacherFormat:
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown teacher format '{fmt}'; known: {', '.join(FORMATS)}")
    return FORMATS[fmt]


def _plain(v: Any) -> Any:
    """numpy scalars -> Python numbers (meta stays loadable with weights_only=True)."""
    return v.item() if isinstance(v, np.generic) else v


def _meta(spec: TeacherFormat, fmt: str, num_classes: int, container: Any) -> dict[str, Any]:
    classes = spec.classes if num_classes == len(spec.classes) else [
        f"class_{i}" for i in range(num_classes)]
    source = {"format": fmt}
    if isinstance(container, Mapping):
        source.update({k: _plain(container[k]) for k in spec.extras if k in container})
    return {"arch": spec.arch, "num_classes": num_classes, "classes": classes,
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "ignore_index": 255,
            "output_stride": spec.output_stride, "source": source}


def load_teacher_checkpoint(path: str | os.PathLike, fmt: str) -> tuple[nn.Module, dict[str, Any]]:
    """Build the architecture of ``fmt`` and load the published checkpoint at ``path`` strictly.

    The class count is read from the classifier weight (a VOC/Cityscapes model has the standard
    names; any other count gets ``class_<i>``). Returns ``(model in eval mode, meta)``.
    """
    spec = _spec(fmt)
    container = safe_load(path)
    sd = extract_state_dict(container, path)
    if spec.classifier_key not in sd:
        raise CheckpointError(f"{path}: not a '{fmt}' checkpoint: no '{spec.classifier_key}' "
                              f"(first keys: {', '.join(list(sd)[:5])})")
    num_classes = int(sd[spec.classifier_key].shape[0])
    meta = _meta(spec, fmt, num_classes, container)
    del container  # the real files also carry every SGD momentum buffer: free them early
    model = MODELS.build(spec.arch, num_classes=num_classes, **spec.kwargs)
    load_strict(model, sd, f"{path} ({fmt})")
    return model.eval(), meta


def import_teacher(path: str | os.PathLike, fmt: str, out_path: str | os.PathLike) -> Path:
    """Convert a published checkpoint into a segkd model checkpoint at ``out_path``."""
    model, meta = load_teacher_checkpoint(path, fmt)
    kwargs = {"num_classes": meta["num_classes"], **_spec(fmt).kwargs}
    ckpt = model_checkpoint(model, {"arch": meta["arch"], "kwargs": kwargs}, None, meta)
    return save_checkpoint(ckpt, out_path)  # atomic, with a sha256 sidecar
