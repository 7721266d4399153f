"""A model's spec and its rebuilding: the architecture a checkpoint stores, and the module made
from it again (cheap-conv replacements applied in order, weights loaded strictly).

A spec is ``{"arch": ..., "kwargs": {..., "num_classes": n}}`` (see :mod:`segkd.core.checkpoint` for
the file around it). Every model rebuilt here returns the logits tensor ``[N, C, H, W]``.
"""
from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from segkd.config.schema import ModelCfg
from segkd.core.checkpoint import is_segkd, load_checkpoint, load_strict
from segkd.core.errors import CheckpointError, ConfigError
from segkd.models.factory import create_model


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
    from segkd.models.cheap import auto_plan, replace_convs, resolve_paths

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
    """The architecture of ``spec`` (fresh weights, or pretrained ones), replacements applied."""
    kwargs = dict(spec.get("kwargs", {}))
    model = create_model(spec["arch"], pretrained=pretrained, **kwargs)
    if replacements:
        apply_replacements(model, replacements)
    return model


def model_from_checkpoint(path: str) -> tuple[nn.Module, dict, dict]:
    """Rebuild a model saved by segkd (training run or import-teacher) -> (model, meta, ckpt)."""
    ckpt = load_checkpoint(path)
    return model_from_loaded(ckpt, str(path)), ckpt.get("meta", {}), ckpt


def model_from_loaded(ckpt: dict, source: str) -> nn.Module:
    """The model of an already loaded segkd checkpoint ``ckpt`` (read from ``source``)."""
    if not is_segkd(ckpt) or "model" not in ckpt:
        raise CheckpointError(f"{source} is not a segkd checkpoint; to use a published teacher run "
                              "`segkd import-teacher` first, or give teacher.model + teacher.weights")
    model = build_from_spec(ckpt["model"], ckpt.get("replacements"))
    load_strict(model, ckpt["state_dict"], source)
    return model


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The model of a segkd checkpoint (a ``.pt`` file, or a run directory: its best.pt, else
    last.pt), in eval mode, and its meta (``classes``, ``num_classes``, ``mean``, ``std``,
    ``ignore_index``). The file's sha256 is verified and no code is executed from it; the
    model's forward returns the logits tensor ``[N, C, H, W]``."""
    model, meta, _ = model_from_checkpoint(str(path))
    return model.eval(), dict(meta)
