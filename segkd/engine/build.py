"""Builders: the only place that turns config sections into objects (below: plain kwargs)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from segkd.config.schema import Config, StageCfg, TeacherCfg, Term
from segkd.core.checkpoint import is_segkd, load_strict, read_checkpoint
from segkd.core.errors import CheckpointError, ConfigError
from segkd.distill.distiller import Distiller
from segkd.engine.runtime import TEACHER_DTYPES, Runtime
from segkd.models.spec import build_from_spec, model_from_loaded, model_spec


def _raw_state(path: str) -> tuple[dict, str]:
    """A bare or wrapped ({'state_dict'|'model': ...}) state dict ('module.' prefixes dropped)
    and the sha256 of the bytes it was loaded from."""
    read = read_checkpoint(path)
    obj = read.obj
    if is_segkd(obj):
        obj = obj["state_dict"]
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {k[7:] if k.startswith("module.") else k: v for k, v in obj.items()}, read.sha256


def build_teacher(cfg: TeacherCfg, num_classes: int) -> tuple[nn.Module, dict]:
    """The frozen teacher from a segkd checkpoint, or an architecture plus a weights file.

    Returns (teacher, info) with info = {"spec", "replacements", "meta"} (how to rebuild it) and
    "sha256": of the bytes the teacher was loaded from (None when it came from no file).
    """
    if cfg.checkpoint:
        read = read_checkpoint(cfg.checkpoint)
        ckpt = read.obj
        teacher = model_from_loaded(ckpt, str(read.path))
        info = {"spec": ckpt["model"], "replacements": list(ckpt.get("replacements") or []),
                "meta": ckpt.get("meta", {}), "sha256": read.sha256}
    elif cfg.model is not None:
        spec = model_spec(cfg.model, num_classes)
        teacher = build_from_spec(spec, pretrained=cfg.model.pretrained)
        digest = None
        if cfg.weights:
            state, digest = _raw_state(cfg.weights)
            load_strict(teacher, state, cfg.weights)
        info = {"spec": spec, "replacements": [], "meta": {}, "sha256": digest}
    else:
        raise ConfigError("teacher: give `checkpoint` or `model` (+ `weights`)")
    teacher.requires_grad_(False).eval()
    n = info["meta"].get("num_classes")
    if n is not None and n != num_classes:
        raise ConfigError(f"teacher {cfg.checkpoint or cfg.weights} has {n} classes but the "
                          f"data/student have {num_classes}")
    return teacher, info


def stage_terms(stage: StageCfg) -> list[Term]:
    """A stage's terms with unique names (loss name, then index), refused when the stage's data
    has no labels and a loss needs them. The Distiller resolves each by its loss's contract
    (``segkd/distill/losses/contract.py``) when it installs them."""
    from segkd.distill.losses.contract import contract_of

    terms, seen = [], set()
    for i, t in enumerate(stage.terms):
        need = contract_of(t.loss)  # an unknown name fails first, with suggestions
        name = t.name or (t.loss if t.loss not in seen else f"{t.loss}_{i}")
        if name in seen:
            raise ConfigError(f"stage '{stage.name}': two terms named '{name}'; set `name:`")
        seen.add(name)
        if stage.data == "images" and need.needs_target:
            raise ConfigError(f"stage '{stage.name}' trains on images without labels: its term "
                              f"'{name}' (loss '{t.loss}') needs labels")
        terms.append(t.model_copy(update={"name": name}))
    return terms


def build_distiller(cfg: Config, student: nn.Module, teacher: nn.Module | None,
                    ignore_index: int, runtime: Runtime | None = None) -> Distiller:
    """The Distiller of a run on ``runtime`` (under mixed precision the frozen teacher keeps
    its conv/linear weights in the run's compute type; ``teacher.precision`` overrides it)."""
    dtype = TEACHER_DTYPES.get(cfg.teacher.precision) if cfg.teacher else None
    d = Distiller(student, teacher, ignore_index=ignore_index,
                  teacher_train_bn=bool(cfg.teacher and cfg.teacher.train_bn), teacher_dtype=dtype)
    d.store_teacher_weights_in(dtype or (runtime.compute_dtype if runtime else None))
    return d


def build_teacher_cache(cfg: Config, fabric, distiller: Distiller, say, progress=None, *,
                        teacher_sha256: str | None, runtime: Runtime):
    """The run's teacher cache (``teacher.cache``), or None when it is off.

    Its key holds the teacher: ``teacher_sha256``, the sha256 of the very bytes the teacher was
    loaded from (``build_teacher``'s ``info["sha256"]``; never a second read of the file, which
    may have been replaced since), else (no file) the sha256 of its weights; and how the run
    computes the teacher (precision, memory format, device, torch version), so a changed
    teacher or setting never reads a stale cache."""
    from segkd.distill.cache_store import CacheError
    from segkd.distill.teacher_cache import TeacherCache, weights_sha256

    t = cfg.teacher
    if t is None or t.cache is None or t.cache.mode == "off" or distiller.teacher is None:
        return None
    if t.train_bn:
        raise CacheError("teacher.cache needs the teacher in eval mode; teacher.train_bn: true "
                         "makes its output depend on the batch. Set teacher.cache: false")
    key = {"format": 1, "mode": t.cache.mode,
           "teacher": teacher_sha256 or weights_sha256(distiller.teacher),
           "teacher_model": t.model.model_dump(mode="json") if t.model else None,
           "precision": fabric.strategy.precision.__class__.__name__ + ":"
                        + str(getattr(fabric.strategy.precision, "precision", "")),
           "teacher_dtype": str(distiller.teacher_dtype or distiller.teacher_compute_dtype),
           "channels_last": cfg.trainer.channels_last, "device": runtime.device_type,
           "torch": torch.__version__}
    precision = fabric.strategy.precision

    def teacher_fn(images: torch.Tensor) -> dict:
        images = precision.convert_input(images)  # as the wrapped module converts its inputs
        with fabric.autocast():
            return distiller.teacher_outputs(images)

    return TeacherCache(t.cache, teacher_fn, key, cfg.data.batch_size, cfg.trainer.channels_last,
                        fabric.device, say, progress)


def same_teacher(ckpt: dict, sha256: Optional[str], teacher_cfg) -> None:
    """A resumed run distils from the teacher it started with: the sha256 of the bytes loaded now
    must be the one last.pt recorded (a teacher file replaced between the runs would otherwise
    mix two teachers into one student)."""
    was = ckpt.get("teacher_sha256")
    if was and sha256 and was != sha256:
        where = getattr(teacher_cfg, "checkpoint", None) or getattr(teacher_cfg, "weights", None)
        raise CheckpointError(f"the teacher {where} is not the one this run started with (sha256 "
                              f"{sha256[:12]}... now, {was[:12]}... in last.pt): put the original "
                              "teacher back to resume, or start a new run")
