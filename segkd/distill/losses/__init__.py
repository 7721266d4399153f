"""Tensor-only distillation losses. Importing this package registers every loss in LOSSES.

Each loss is a small ``nn.Module``: ``forward(student, teacher, **extra) -> scalar`` (unweighted,
float32 whatever the autocast state); the maths are plain functions in the same module.
"""
from __future__ import annotations

from . import at, ce, cwd, dist, hint, kd, ofd, skd
from ._common import LossInputError
from .ofd import ofd_margin

__all__ = ["LossInputError", "at", "ce", "cwd", "dist", "hint", "kd", "ofd", "ofd_margin", "skd"]
