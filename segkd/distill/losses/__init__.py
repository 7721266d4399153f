"""Tensor-only distillation losses. Importing this package registers every loss in LOSSES.

Each loss is a small ``nn.Module``: ``forward(student, teacher, **extra) -> scalar`` (unweighted,
float32 whatever the autocast state); the maths are plain functions in the same module. What a
loss needs (teacher, labels, logits or features, teacher-side setup) it declares on its class:
see :mod:`.contract`.
"""
from __future__ import annotations

from segkd.distill.losses import at, ce, cwd, dist, fsp, hint, kd, ofd, skd
from segkd.distill.losses._common import LossInputError
from segkd.distill.losses.contract import Contract, Loss, contract_of
from segkd.distill.losses.ofd import ofd_margin

__all__ = ["Contract", "Loss", "LossInputError", "at", "ce", "contract_of", "cwd", "dist", "fsp",
           "hint", "kd", "ofd", "ofd_margin", "skd"]
