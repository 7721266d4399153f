"""The distillation config written for the chosen student, and why it was chosen.

The evidence behind each default is in docs/compress.md (from docs/benchmarks.md and
docs/results/camvid_search): a student that starts from the teacher's tensors reaches the
teacher with CE + DIST (weight 1); a randomly initialised student gets a hint on the encoder's
stride-16 feature (FitNets, 1x1 conv + BN connector) plus DIST on the logits; the teacher with
cheap convolutions gets the Plug and Play recipe (hint MSE x1000 on the stages holding the
replaced convolutions + logit KD, images only, only the new blocks train).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from segkd.apps.compress.candidates import TEACHER_INIT, Candidate

MIN_STEPS = 300  # BatchNorm statistics need a few hundred optimiser steps; 24 steps collapsed
DEFAULT_EPOCHS = 30  # the camvid-cpu protocol's budget, when no --budget is given
ADAM = {"optimizer": {"name": "adam", "lr": 1.0e-3, "weight_decay": 1.0e-4},
        "schedule": {"name": "onecycle", "max_lr": 1.0e-3, "pct_start": 0.1}}
DIST = {"loss": "dist", "weight": 1.0, "options": {"tau": 1.0, "beta": 1.0, "gamma": 1.0}}
SELECT = {"metric": "select/mIoU", "mode": "max"}


@dataclass
class Budget:
    steps: int
    epochs: int
    iters_per_epoch: Optional[int]  # None: one pass over the training images
    note: str


def size_budget(n_train: int, batch_size: int, steps: Optional[int] = None,
                step_seconds: Optional[float] = None, seconds: Optional[float] = None) -> Budget:
    """Optimiser steps and epochs for ``n_train`` training images: the given steps, or as many
    as ``seconds`` allow at ``step_seconds`` each, or max(300, 30 epochs); never fewer than
    MIN_STEPS unless steps were given (then a note says the run may collapse)."""
    per_epoch = max(1, n_train // batch_size)
    if steps:
        note = f"{steps} optimiser steps (--budget)"
    elif seconds and step_seconds:
        steps = max(1, int(0.8 * seconds / step_seconds))  # a fifth left for validation
        note = f"{steps} steps fit {seconds / 60:.0f} min at {step_seconds:.2f} s/step (measured)"
    else:
        steps = max(MIN_STEPS, DEFAULT_EPOCHS * per_epoch)
        note = f"{steps} steps: max({MIN_STEPS}, {DEFAULT_EPOCHS} epochs of {per_epoch})"
    if steps < MIN_STEPS:
        note += (f"; fewer than {MIN_STEPS}: BatchNorm statistics may not settle and the student "
                 "may collapse to one class")
    if steps <= 50 * per_epoch:  # natural epochs, at most ~50 validations
        epochs, iters = max(1, math.ceil(steps / per_epoch)), None
        if steps < per_epoch:
            epochs, iters = 1, steps
    else:  # a small dataset: 20 validations, each after steps/20 optimiser steps
        iters = math.ceil(steps / 20)
        epochs = math.ceil(steps / iters)
    return Budget(steps, epochs, iters, note)


def feature_path(model, reduction: int = 16) -> Optional[str]:
    """The module path of the encoder feature at ``reduction`` (timm's feature_info), if any."""
    enc = getattr(getattr(model, "encoder", None), "model", None)
    info = getattr(enc, "feature_info", None)
    if info is None:
        return None
    names = dict(model.named_modules())
    for f in info.get_dicts() if hasattr(info, "get_dicts") else info:
        if f.get("reduction") == reduction and f.get("module"):
            for m in (f["module"], f["module"].replace(".", "_")):  # features_only flattens
                if "encoder.model." + m in names:
                    return "encoder.model." + m
    return None


def terms_for(c: Candidate, student, teacher) -> tuple[list[dict], str]:
    """(terms, reason) for candidate ``c`` (``student``/``teacher``: built modules)."""
    if c.kind in TEACHER_INIT:
        return [{"loss": "ce"}, DIST], (
            "starts from the teacher's tensors: CE + DIST (weight 1). On CamVid a teacher-"
            "initialised UNet-R18 with CE + DIST reached the teacher (val 0.537-0.552 vs 0.543); "
            "docs/compress.md")
    if c.kind == "cheap":
        stages = sorted({".".join(p.split(".")[:3]) for p in c.replace[0]["paths"]})
        hints = [{"loss": "mse", "name": f"hint_{s.split('.')[-1]}", "weight": 1000, "student": s,
                  "teacher": s, "connector": "none"} for s in stages]
        return hints + [{"loss": "kd", "weight": 1.0, "options": {"temperature": 1.0}}], (
            "the teacher with cheap convolutions: Plug and Play (hint MSE x1000 where convs were "
            "replaced + logit KD, images only, only the new blocks train; configs/camvid/pnp.yaml)")
    sp, tp = feature_path(student), feature_path(teacher)
    hint = ([{"loss": "hint", "weight": 1.0, "student": sp, "teacher": tp, "connector": "conv1x1_bn"}]
            if sp and tp else [])
    return [{"loss": "ce"}, *hint, DIST], (
        "a randomly initialised student: CE + a FitNets hint at the encoder's stride-16 feature "
        f"({sp or 'none found'}) + DIST on the logits. Loss-only distillation of a random student "
        "closed 0-13% of the CamVid gap at the same budget: expect less than from a teacher-"
        "initialised one (docs/compress.md)")


def student_config(c: Candidate, terms: list[dict], data: dict, teacher_path: str,
                   budget: Budget, name: str, cache: bool, cache_dir: Optional[str],
                   seed: int = 0) -> dict[str, Any]:
    """The config of the student run (plain data; written as YAML into the output folder)."""
    stage: dict[str, Any] = {"name": "distill", "epochs": budget.epochs, "terms": terms,
                             "select": SELECT, **ADAM}
    if budget.iters_per_epoch:
        stage["iters_per_epoch"] = budget.iters_per_epoch
    if c.kind == "cheap":
        stage.update(data="images", trainable=[], replace=c.replace,
                     optimizer={"name": "radam", "lr": 5.0e-3},
                     schedule={"name": "plateau", "factor": 0.5, "patience": 0, "min_lr": 1.0e-5,
                               "threshold": 0.01, "threshold_mode": "rel"})
    teacher: dict[str, Any] = {"checkpoint": teacher_path}
    if cache:
        teacher["cache"] = {"dir": cache_dir} if cache_dir else True
    return {"name": name, "seed": seed, "data": data, "model": c.model_cfg, "teacher": teacher,
            "stages": [stage], "eval": {"splits": [s for s in ("val", "test") if _has(data, s)]}}


def baseline_config(c: Candidate, student: dict, name: str) -> dict[str, Any]:
    """The same architecture, data and budget trained with CE alone from a random
    initialisation, without the teacher: what training the small model alone gives."""
    from segkd.apps.compress.candidates import _model_cfg

    stage = {k: v for k, v in student["stages"][0].items()
             if k not in ("data", "trainable", "replace", "terms")}
    stage.update(name="train", terms=[{"loss": "ce"}], **ADAM)
    if c.replace:
        stage["replace"] = c.replace
    return {**{k: v for k, v in student.items() if k != "teacher"}, "name": name,
            "model": _model_cfg(c.spec), "stages": [stage]}


def _has(data: dict, split: str) -> bool:
    """Whether the data section has ``split`` to evaluate (``test_split: auto`` resolved: a
    CamVid copy with train + val only has no test split)."""
    if split == "test":
        from segkd.config.schema import DataCfg
        from segkd.data import resolve_test_split

        return resolve_test_split(DataCfg(**data)) is not None
    return bool(data.get(f"{split}_split", "val"))


def flip_only(data: dict) -> bool:
    """True when the training transforms allow the exact teacher cache (a flip at most)."""
    return not (data.get("scale") or data.get("crop") or data.get("color_jitter")
                or data.get("blur"))
