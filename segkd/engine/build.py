"""Builders: the only place that turns config sections into objects (below: plain kwargs)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..config import Config, ModelCfg, StageCfg, TeacherCfg
from ..distill.distiller import Distiller, Term
from ..errors import CheckpointError, ConfigError
from ..models import create_model
from .checkpoint import is_segkd, load_checkpoint, load_strict


def model_spec(cfg: ModelCfg, num_classes: int) -> dict[str, Any]:
    """How to rebuild the architecture (stored in checkpoints)."""
    kwargs = dict(cfg.kwargs)
    if cfg.encoder:
        kwargs["encoder"] = cfg.encoder
    if cfg.output_stride:
        kwargs["output_stride"] = cfg.output_stride
    return {"arch": cfg.arch, "kwargs": {**kwargs, "num_classes": cfg.num_classes or num_classes}}


def apply_replacements(model: nn.Module, replacements: list[dict]) -> list[dict]:
    """Apply cheap-conv replacements ``[{paths, block, options, target_*}]`` in order; a
    replacement with a target and no paths is planned by ``auto_plan``. Returns records."""
    from ..models.cheap import auto_plan, replace_convs, resolve_paths

    records = []
    for r in replacements:
        opts = r.get("options", {})
        if not r.get("paths"):
            if not (r.get("target_params") or r.get("target_flops")):
                raise ConfigError("a replacement needs `paths` or `target_params`/`target_flops`")
            plan = auto_plan(model, target_params=r.get("target_params"),
                             target_flops=r.get("target_flops"),
                             input_size=tuple(r.get("input_size", (512, 512))),
                             block=r.get("block", "dwsep"), candidates=r.get("candidates"), **opts)
            paths = plan["paths"]
        else:
            paths = resolve_paths(model, list(r["paths"]))
        records += replace_convs(model, paths, r.get("block", "dwsep"), **opts)
    return records


def build_from_spec(spec: dict, replacements: list[dict] | None = None,
                    pretrained: bool = False) -> nn.Module:
    kwargs = dict(spec.get("kwargs", {}))
    model = create_model(spec["arch"], pretrained=pretrained, **kwargs)
    if replacements:
        apply_replacements(model, replacements)
    return model


def load_state(model: nn.Module, state: dict, source: str) -> None:
    """Strict load (see :func:`segkd.engine.checkpoint.load_strict`)."""
    load_strict(model, state, source)


def model_from_checkpoint(path: str) -> tuple[nn.Module, dict, dict]:
    """Rebuild a model saved by segkd (training run or import-teacher) -> (model, meta, ckpt)."""
    ckpt = load_checkpoint(path)
    if not is_segkd(ckpt) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a segkd checkpoint; to use a published teacher run "
                              "`segkd import-teacher` first, or give teacher.model + teacher.weights")
    model = build_from_spec(ckpt["model"], ckpt.get("replacements"))
    load_state(model, ckpt["state_dict"], str(path))
    return model, ckpt.get("meta", {}), ckpt


def _raw_state(path: str) -> dict:
    """A bare or wrapped ({'state_dict'|'model': ...}) state dict; 'module.' prefixes dropped."""
    obj = load_checkpoint(path)
    if is_segkd(obj):
        obj = obj["state_dict"]
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}


def build_teacher(cfg: TeacherCfg, num_classes: int) -> tuple[nn.Module, dict]:
    """The frozen teacher from a segkd checkpoint, or an architecture plus a weights file.

    Returns (teacher, info) with info = {"spec", "replacements", "meta"} (how to rebuild it).
    """
    if cfg.checkpoint:
        teacher, meta, ckpt = model_from_checkpoint(cfg.checkpoint)
        info = {"spec": ckpt["model"], "replacements": list(ckpt.get("replacements") or []), "meta": meta}
    elif cfg.model is not None:
        spec = model_spec(cfg.model, num_classes)
        teacher = build_from_spec(spec, pretrained=cfg.model.pretrained)
        if cfg.weights:
            load_state(teacher, _raw_state(cfg.weights), cfg.weights)
        info = {"spec": spec, "replacements": [], "meta": {}}
    else:
        raise ConfigError("teacher: give `checkpoint` or `model` (+ `weights`)")
    teacher.requires_grad_(False).eval()
    n = info["meta"].get("num_classes")
    if n is not None and n != num_classes:
        raise ConfigError(f"teacher {cfg.checkpoint or cfg.weights} has {n} classes but the "
                          f"data/student have {num_classes}")
    return teacher, info


def stage_terms(stage: StageCfg) -> list[Term]:
    """Resolve a stage's term configs into Terms with unique names (loss name, then index)."""
    from ..registry import LOSSES

    terms, seen = [], set()
    for i, t in enumerate(stage.terms):
        LOSSES.get(t.loss)  # an unknown name fails first, with suggestions (not "needs a teacher")
        name = t.name or (t.loss if t.loss not in seen else f"{t.loss}_{i}")
        if name in seen:
            raise ConfigError(f"stage '{stage.name}': two terms named '{name}'; set `name:`")
        seen.add(name)
        teacher = None if t.loss == "ce" else t.teacher
        if stage.data == "images" and t.loss == "ce":
            raise ConfigError(f"stage '{stage.name}' trains on images without labels: it cannot "
                              "have a 'ce' term")
        terms.append(Term(name=name, loss=t.loss, weight=t.weight, student=t.student,
                          teacher=teacher, student_hook=t.student_hook,
                          teacher_hook=t.teacher_hook, connector=t.connector, options=t.options))
    return terms


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The type autocast computes convolutions in under a Fabric precision (None: no autocast)."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


def build_distiller(cfg: Config, student: nn.Module, teacher: nn.Module | None,
                    ignore_index: int, precision: str = "32") -> Distiller:
    """The Distiller of a run; ``precision`` is the Fabric precision the run uses (under mixed
    precision the frozen teacher keeps its conv/linear weights in the compute type)."""
    dtype = ({"bf16": torch.bfloat16, "16": torch.float16, "32": torch.float32}.get(cfg.teacher.precision)
             if cfg.teacher else None)
    d = Distiller(student, teacher, ignore_index=ignore_index,
                  teacher_train_bn=bool(cfg.teacher and cfg.teacher.train_bn), teacher_dtype=dtype)
    d.store_teacher_weights_in(dtype or autocast_dtype(precision))
    return d


def build_teacher_cache(cfg: Config, fabric, distiller: Distiller, say, progress=None):
    """The run's teacher cache (``teacher.cache``), or None when it is off.

    Its key holds the teacher's weights (sha256 of the checkpoint or weights file) and how the
    run computes the teacher (precision, memory format, device, torch version), so a changed
    teacher or setting never reads a stale cache."""
    from ..distill.cache_store import CacheError
    from ..distill.teacher_cache import TeacherCache, file_sha256, weights_sha256

    t = cfg.teacher
    if t is None or t.cache is None or t.cache.mode == "off" or distiller.teacher is None:
        return None
    if t.train_bn:
        raise CacheError("teacher.cache needs the teacher in eval mode; teacher.train_bn: true "
                         "makes its output depend on the batch. Set teacher.cache: false")
    source = t.checkpoint or t.weights
    key = {"format": 1, "mode": t.cache.mode,
           "teacher": file_sha256(source) if source else weights_sha256(distiller.teacher),
           "teacher_model": t.model.model_dump(mode="json") if t.model else None,
           "precision": fabric.strategy.precision.__class__.__name__ + ":"
                        + str(getattr(fabric.strategy.precision, "precision", "")),
           "teacher_dtype": str(distiller.teacher_dtype or distiller.teacher_compute_dtype),
           "channels_last": cfg.trainer.channels_last, "device": fabric.device.type,
           "torch": torch.__version__}
    precision = fabric.strategy.precision

    def teacher_fn(images: torch.Tensor) -> dict:
        images = precision.convert_input(images)  # as the wrapped module converts its inputs
        with fabric.autocast():
            return distiller.teacher_outputs(images)

    return TeacherCache(t.cache, teacher_fn, key, cfg.data.batch_size, cfg.trainer.channels_last,
                        fabric.device, say, progress)
