"""The teacher ``segkd compress`` starts from: a segkd checkpoint (or run directory, or an
imported published checkpoint), or a plain state dict of a segmentation_models_pytorch or
torchvision model with its architecture given on the command line (converted once into a segkd
checkpoint in the output folder, so every later step reads one format)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch.nn as nn

from segkd.core.checkpoint import is_segkd, load_strict, model_checkpoint, resolve_checkpoint, save_checkpoint
from segkd.core.errors import CheckpointError, SegkdError

SUPPORTED = ("a segkd checkpoint (a run's best.pt, or its run directory); a published checkpoint "
             "converted by `segkd import-teacher`; a segmentation_models_pytorch state dict with "
             "--arch (unet, fpn, deeplabv3plus, ...) --encoder (resnet34, ...) --classes N; a "
             "torchvision segmentation state dict with --arch tv_deeplabv3_resnet50 (or "
             "tv_fcn_resnet50, tv_lraspp_mobilenet_v3_large, ...) --classes N")


@dataclass
class Teacher:
    model: nn.Module  # eval mode
    spec: dict  # {"arch", "kwargs"} as checkpoints store it
    path: Path  # a segkd checkpoint of it
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.spec["kwargs"]["num_classes"])

    def describe(self) -> str:
        kw = self.spec["kwargs"]
        return f"{self.spec['arch']}/{kw.get('encoder', '-')}"


def smp_keys(state: dict, model: nn.Module) -> dict:
    """An smp state dict with a native encoder (``encoder.conv1...``) renamed to segkd's timm
    universal encoder keys (``encoder.model.conv1...``); the ImageNet ``fc`` dropped."""
    own = model.state_dict()
    if all(k in own for k in state):
        return state
    out = {}
    for k, v in state.items():
        if k.startswith("encoder.") and not k.startswith("encoder.model."):
            if k.startswith("encoder.fc."):
                continue
            k = "encoder.model." + k[len("encoder."):]
        out[k] = v
    return out


def load_teacher(source: str, out_dir: Path, arch: Optional[str] = None,
                 encoder: Optional[str] = None, classes: Optional[int] = None) -> Teacher:
    """The teacher at ``source`` (see module doc); plain state dicts are written to
    ``out_dir/teacher.pt`` as a segkd checkpoint."""
    from segkd.models.spec import model_from_checkpoint

    path = Path(source)
    if not path.exists():
        raise SegkdError(f"teacher {source} not found. A teacher is {SUPPORTED}")
    if arch is None:
        try:
            ckpt_path = resolve_checkpoint(path)
            model, meta, ckpt = model_from_checkpoint(str(ckpt_path))
        except CheckpointError as err:
            raise SegkdError(f"{source}: {err}. A teacher is {SUPPORTED}") from None
        return Teacher(model.eval(), dict(ckpt["model"]), ckpt_path, dict(meta))
    return _from_state_dict(path, out_dir, arch, encoder, classes)


def _from_state_dict(path: Path, out_dir: Path, arch: str, encoder: Optional[str],
                     classes: Optional[int]) -> Teacher:
    from segkd.models.spec import build_from_spec
    from segkd.models.teachers.importer import extract_state_dict, safe_load

    if not classes:
        raise SegkdError(f"{path}: a state-dict teacher needs --classes N (and --arch, --encoder)")
    obj = safe_load(path)
    if isinstance(obj, dict) and is_segkd(obj):
        raise SegkdError(f"{path} is a segkd checkpoint: give it without --arch")
    state = extract_state_dict(obj, path)
    kwargs: dict[str, Any] = {"num_classes": int(classes)}
    if encoder:
        kwargs["encoder"] = encoder.removeprefix("tu-")
    spec = {"arch": arch, "kwargs": kwargs}
    try:
        model = build_from_spec(spec)
    except SegkdError as err:
        raise SegkdError(f"{err}. A teacher is {SUPPORTED}") from None
    load_strict(model, smp_keys(state, model), str(path))
    meta = {"num_classes": int(classes), "classes": [f"class_{i}" for i in range(int(classes))],
            "source": str(path)}
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / "teacher.pt"
    save_checkpoint(model_checkpoint(model, spec, None, meta), dest)
    return Teacher(model.eval(), spec, dest, meta)
