"""Checks that keep a run from being silently wrong, run once per epoch (never per step): no
non-finite parameter or buffer reaches a checkpoint, and warnings when BatchNorm's running
statistics cannot be trusted (too few optimiser steps for them to follow the weights, a
validation that collapsed to one class, train-mode and eval-mode predictions far apart)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from segkd.core.checkpoint import nonfinite_keys

# BatchNorm's running statistics are an exponential average: every training forward moves them
# `momentum` (torch's default 0.1) of the way toward the batch's statistics, so they describe
# the weights of about the last 1/momentum steps and still hold (1 - momentum)^n of their start
# values after n steps. A stage shorter than this many of those time constants (50 steps at 0.1;
# 0.9^50 = 0.5% of the start values left) evaluates with statistics of weights it no longer has.
BN_TIME_CONSTANTS = 5

# "Validation collapsed to one class": one class takes at least COLLAPSE_SHARE of the predicted
# labeled pixels while the labels give the other classes at least COLLAPSE_OTHERS (predicting the
# majority everywhere then costs at least that much pixel accuracy: not a one-class split).
COLLAPSE_SHARE = 0.99
COLLAPSE_OTHERS = 0.02

# Train mode (BatchNorm on the batch's own statistics) vs eval mode (running statistics) on the
# same validation batch. Once the running statistics follow the weights the two predict nearly the
# same classes. "Gross" disagreement: a class that covers at least MODE_MIN_SHARE of the batch in
# one mode covering less than MODE_RATIO of that in the other (the minority class vanishing or
# flooding the image, which pixel agreement alone hides when one class dominates), or a mean IoU
# between the two predictions (over those classes) below MODE_IOU_MIN.
MODE_MIN_SHARE = 0.01
MODE_RATIO = 0.25
MODE_IOU_MIN = 0.5
# Where the batch's labels are known, gross disagreement is only a warning when eval mode also
# scores worse against them: its mean IoU over the labelled classes more than MODE_LABEL_SLACK
# below train mode's. Mid-training (high learning rate, one batch's statistics) the modes can
# differ on a small class while eval mode is the better of the two: nothing for the user to fix.
MODE_LABEL_SLACK = 0.05

_BN = nn.modules.batchnorm._BatchNorm


def nonfinite_state(student: nn.Module, connectors: nn.Module) -> list[str]:
    """Names of the student's and connectors' parameters and buffers holding NaN or Inf."""
    state = {**student.state_dict(), **{f"connectors.{k}": v for k, v in connectors.state_dict().items()}}
    return nonfinite_keys(state)


def nonfinite_message(bad: Sequence[str], where: str, last_good: str) -> str:
    """The NonFiniteLoss line for parameters or buffers that became NaN/Inf while the loss did not."""
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"parameters became non-finite at {where} (the loss stayed finite): "
            f"{', '.join(bad[:3])}{more} hold NaN/Inf, so nothing of this epoch was saved. "
            f"{last_good}; lower the learning rate or a term weight.")


def training_batchnorms(student: nn.Module) -> list[nn.Module]:
    """The student's BatchNorm layers whose running statistics chase moving weights: those that
    update them in the current (training) mode, when some student parameter trains (a stage that
    trains only connectors moves no weight the statistics could lag)."""
    if not any(p.requires_grad for p in student.parameters()):
        return []
    return [m for m in student.modules() if isinstance(m, _BN) and m.training and m.track_running_stats]


def bn_steps_needed(bns: Sequence[nn.Module]) -> int:
    """Optimiser steps the slowest of ``bns`` needs for its running statistics to follow (with
    none: what torch's default momentum needs, the time any model is given to settle)."""
    momentum = min(((m.momentum or 0.1) for m in bns), default=0.1)
    return math.ceil(BN_TIME_CONSTANTS / momentum)


def few_steps_warning(bns: Sequence[nn.Module], stage: str, si: int, epochs: int, iters: int,
                      accum: int, loader_batches: Optional[int], batch_size: int) -> Optional[str]:
    """A warning when a stage that trains BatchNorm has fewer optimiser steps than its running
    statistics need. ``iters``: iterations per epoch, ``accum`` of them per optimiser step;
    ``loader_batches``: batches in one pass of the training loader, None when the stage's
    ``iters_per_epoch`` sets the epoch length (a smaller batch then changes nothing)."""
    if not bns:
        return None
    per_epoch = -(-iters // accum)
    steps, need = epochs * per_epoch, bn_steps_needed(bns)
    if steps >= need:
        return None
    fixes = [f"stages.{si}.epochs to {math.ceil(need / per_epoch)} or more",
             f"stages.{si}.iters_per_epoch to {math.ceil(need / epochs) * accum} or more "
             "(the loader restarts within an epoch)"]
    if loader_batches is not None:
        fixes.append(f"a smaller data.batch_size (now {batch_size}: {loader_batches} batch(es) per epoch)")
    return (f"stage '{stage}' trains BatchNorm for only {steps} optimiser step(s) ({epochs} epoch(s) x "
            f"{per_epoch}); its running statistics need about {need} to follow the weights, so "
            "eval-mode predictions (validation, best.pt, exports) can be far worse than training "
            f"suggests. Set {', '.join(fixes[:-1])}, or {fixes[-1]}")


def collapse_warning(label_pixels: Sequence[int], pred_pixels: Sequence[int], classes: Sequence[str],
                     split: str, where: str) -> Optional[str]:
    """A warning when the model predicts one class for (nearly) every labeled pixel of ``split``
    although the labels hold others."""
    total = sum(pred_pixels)
    if total == 0:
        return None
    top = max(range(len(pred_pixels)), key=lambda c: pred_pixels[c])
    share, others = pred_pixels[top] / total, 1 - label_pixels[top] / max(1, sum(label_pixels))
    if share < COLLAPSE_SHARE or others < COLLAPSE_OTHERS:
        return None
    return (f"validation collapsed to one class at {where}: the model predicts '{classes[top]}' for "
            f"{share:.1%} of the labeled {split} pixels, where the labels hold {others:.1%} of other "
            "classes. If the training loss still falls, BatchNorm's running statistics are behind "
            "the weights (more optimiser steps); otherwise lower the learning rate")


def _label_miou(pred: torch.Tensor, labels: torch.Tensor, classes: int, ignore_index: int) -> float:
    """Mean IoU of ``pred`` [B, h, w] against ``labels`` (resized to it, nearest) over the classes
    the labels hold."""
    if labels.shape[-2:] != pred.shape[-2:]:
        labels = torch.nn.functional.interpolate(labels[:, None].float(), size=pred.shape[-2:],
                                                 mode="nearest")[:, 0].long()
    keep = (labels != ignore_index) & (labels >= 0) & (labels < classes)
    t, p = labels[keep], pred[keep]
    cm = torch.bincount(t * classes + p, minlength=classes ** 2).view(classes, classes).double()
    inter, present = cm.diag(), cm.sum(1) > 0
    union = cm.sum(1) + cm.sum(0) - inter
    return float((inter[present] / union[present]).mean()) if bool(present.any()) else float("nan")


@torch.no_grad()
def mode_disagreement(call: Callable[[torch.Tensor], torch.Tensor], student: nn.Module,
                      bns: Sequence[nn.Module], images: torch.Tensor,
                      labels: Optional[torch.Tensor] = None, ignore_index: int = 255) -> dict:
    """Predict ``images`` in eval mode and with ``bns`` in train mode (batch statistics; every
    other module stays in eval mode, Dropout off) and compare. The running statistics, the
    momentum counters and every module's mode are restored. Returns ``agreement`` (share of
    pixels given the same class), per class ``train`` / ``eval`` (shares of the pixels) and
    ``iou`` (between the two predictions; None for a class neither predicts); with ``labels``
    also ``label_miou``: {"train", "eval"}, each mode's mean IoU against them."""
    modes = [(m, m.training) for m in student.modules()]
    saved = [(b, b.clone()) for m in bns for b in m.buffers(recurse=False)]
    try:
        student.eval()
        logits = call(images)
        classes, eval_pred = logits.shape[1], logits.argmax(1)
        for m in bns:
            m.train()
        train_pred = call(images).argmax(1)
    finally:
        for b, v in saved:
            b.copy_(v)
        for m, mode in modes:
            m.training = mode
    both = torch.bincount((train_pred * classes + eval_pred).flatten(), minlength=classes ** 2)
    both = both.view(classes, classes).double().cpu()  # [train class, eval class]
    n, same = max(1.0, float(both.sum())), both.diag()
    train, eval_ = both.sum(1), both.sum(0)
    union = train + eval_ - same
    out = {"agreement": float(same.sum()) / n, "train": (train / n).tolist(), "eval": (eval_ / n).tolist(),
           "iou": [float(i / u) if u > 0 else None for i, u in zip(same, union)]}
    if labels is not None:
        labels = labels.to(train_pred.device).long()
        out["label_miou"] = {"train": _label_miou(train_pred, labels, classes, ignore_index),
                             "eval": _label_miou(eval_pred, labels, classes, ignore_index)}
    return out


def mode_check(distiller, images: torch.Tensor, classes: Sequence[str], where: str,
               labels: Optional[torch.Tensor] = None, ignore_index: int = 255) -> Optional[str]:
    """:func:`mode_warning` for ``images`` (a validation batch, with its ``labels`` where known)
    and the student's BatchNorm layers that train; None when none trains, for a batch of one
    image, or when they synchronise across processes (SyncBatchNorm in train mode would wait for
    the other processes)."""
    bns = training_batchnorms(distiller.student)
    if not bns or images.shape[0] < 2 or any(isinstance(m, nn.SyncBatchNorm) for m in bns):
        return None  # batch statistics of one image fail on 1x1 maps (a pooling branch's BN)
    found = mode_disagreement(distiller.student_call, distiller.student, bns, images, labels, ignore_index)
    return mode_warning(found, classes, images.shape[0], where)


def mode_warning(d: dict, classes: Sequence[str], images: int, where: str) -> Optional[str]:
    """A warning when train-mode and eval-mode predictions (:func:`mode_disagreement`) disagree
    grossly: a class shrinking or growing by more than 1 / MODE_RATIO between the modes, or a
    low mean IoU between them."""
    seen = [c for c in range(len(d["train"])) if max(d["train"][c], d["eval"][c]) >= MODE_MIN_SHARE]
    shifted = [c for c in seen if min(d["train"][c], d["eval"][c]) < MODE_RATIO * max(d["train"][c], d["eval"][c])]
    miou = sum(d["iou"][c] or 0.0 for c in seen) / max(1, len(seen))
    if miou >= MODE_IOU_MIN and not shifted:
        return None
    scored = d.get("label_miou")
    if scored and all(math.isfinite(v) for v in scored.values()) and \
            not scored["eval"] < scored["train"] - MODE_LABEL_SLACK:
        return None  # eval mode is as good against the labels: nothing the user has to fix
    name = lambda c: classes[c] if c < len(classes) else str(c)  # noqa: E731
    parts = [f"they give the same class to {d['agreement']:.0%} of the pixels (mean IoU {miou:.2f})"]
    parts += [f"class '{name(c)}' covers {d['train'][c]:.1%} of them in train mode, "
              f"{d['eval'][c]:.1%} in eval mode" for c in shifted[:3]]
    if scored and all(math.isfinite(v) for v in scored.values()):
        parts.append(f"against the labels, mean IoU {scored['train']:.2f} in train mode, "
                     f"{scored['eval']:.2f} in eval mode")
    return (f"train-mode and eval-mode predictions disagree at {where} (a validation batch of "
            f"{images} image(s), BatchNorm on its batch statistics vs its running statistics): "
            f"{'; '.join(parts)}. Validation, best.pt and exports use eval mode: give the stage "
            "more optimiser steps (more epochs, a smaller batch, iters_per_epoch) or a learning "
            "rate that decays by its end")


@dataclass
class RunHealth:
    """What a run has warned about and what its checkpoints hold. ``warnings``: every warning
    given (kept in last.pt, so a resumed run's summary.json lists them too); ``saved``: the epoch
    each checkpoint file written holds (``"last.pt" -> "stage 'train' epoch 3"``), so that an
    error names only files that exist; ``said``: keys of the once-per-stage warnings given."""

    warnings: list[str] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)
    said: set[tuple] = field(default_factory=set)

    @classmethod
    def resumed(cls, ckpt: dict, stage: str, best_exists: bool) -> "RunHealth":
        """The state a run resumed from ``ckpt`` (its last.pt, written in ``stage``) starts with."""
        p = ckpt["progress"]
        saved = {"last.pt": f"stage '{stage}' epoch {p['epoch']}"}
        if best_exists:
            saved["best.pt"] = (f"stage '{stage}' epoch {p['best_epoch']}" if p.get("best_epoch")
                                else "an earlier stage")
        return cls(warnings=list(ckpt.get("warnings", [])), saved=saved)

    def add(self, msg: str, key: Optional[tuple] = None) -> bool:
        """Record a warning; False (say nothing) when it, or its ``key``, was given before."""
        if msg in self.warnings or (key is not None and key in self.said):
            return False
        if key is not None:
            self.said.add(key)
        self.warnings.append(msg)
        return True

    def last_good(self) -> str:
        """The sentence naming the checkpoints to fall back on, or saying none was written."""
        last, best = self.saved.get("last.pt"), self.saved.get("best.pt")
        if last is None and best is None:
            return "No checkpoint was written before it"
        first, where = ("last.pt", last) if last else ("best.pt", best)
        also = f"; best.pt: {best}" if last and best else ""
        return f"The last good checkpoint is {first} in the run directory ({where}{also})"


DATA_BOUND = 0.2  # share of an epoch spent waiting for data above which the run says so


def data_bound_message(share: float, epoch: int, workers) -> Optional[str]:
    """What to say when ``share`` of epoch ``epoch`` (0-based) was spent waiting for batches, or
    None: not after a stage's first epoch, which also pays for worker start-up and filling the
    cache, nor below DATA_BOUND."""
    if epoch == 0 or share < DATA_BOUND:
        return None
    return (f"data loading is the bottleneck: {share:.0%} of the last epoch was spent waiting for "
            f"batches. Raise data.num_workers (now {workers}), set data.cache: true (decoded images "
            "kept in memory), or store the images downscaled to the training size.")
