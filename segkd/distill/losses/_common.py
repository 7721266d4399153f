"""Shared helpers for the tensor-only losses: float32 compute, resizing, input checks.

Every loss ``forward`` is wrapped by :func:`fp32_forward`, so the maths run in float32 with
autocast disabled whatever the caller's precision, and the teacher is detached (the teacher is
a fixed target: no gradient ever flows into it through a loss).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.core.errors import SegkdError


class LossInputError(SegkdError, ValueError):
    """Tensors given to a loss do not fit it (wrong rank, channels, batch, labels)."""


def no_autocast(device: torch.device) -> ContextManager[Any]:
    """A context that disables autocast on ``device`` (a no-op where autocast is unknown)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know
        return contextlib.nullcontext()


def fp32_forward(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorate ``forward(self, student, teacher, **extra)``: float32 inputs, no autocast,
    teacher detached. Non-tensor extras pass through; tensor extras are left as they are.
    ``student`` / ``teacher`` may be lists of tensors (a loss that takes lists): each is
    converted, and a list is handed on."""

    @functools.wraps(forward)
    def wrapper(self: Any, student: Any, teacher: Any = None, **extra: Any) -> Tensor:
        first = student[0] if isinstance(student, (list, tuple)) else student
        with no_autocast(first.device):
            return forward(self, _float(student), _float(teacher, detach=True), **extra)

    return wrapper


def _float(x: Any, detach: bool = False) -> Any:
    """``x`` (a tensor, a list of them or None) as float32, detached when ``detach``."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [_float(v, detach) for v in x]
    return (x.detach() if detach else x).float()


def check_4d(name: str, **tensors: Tensor | None) -> None:
    """Raise unless every given tensor is 4-D ``[N, C, H, W]``."""
    for label, x in tensors.items():
        if x is not None and x.dim() != 4:
            raise LossInputError(
                f"loss '{name}': {label} must be [N, C, H, W], got shape {tuple(x.shape)}"
            )


def require_teacher(name: str, teacher: Tensor | None) -> Tensor:
    """Return ``teacher`` or raise: the loss needs one."""
    if teacher is None:
        raise LossInputError(f"loss '{name}' needs a teacher tensor, got None")
    return teacher


def check_pair(name: str, student: Tensor, teacher: Tensor, same_channels: bool = True) -> None:
    """Check ``[N, C, H, W]`` student/teacher share the batch (and channel) size."""
    check_4d(name, student=student, teacher=teacher)
    if student.shape[0] != teacher.shape[0]:
        raise LossInputError(
            f"loss '{name}': batch sizes differ (student {student.shape[0]}, "
            f"teacher {teacher.shape[0]})"
        )
    if same_channels and student.shape[1] != teacher.shape[1]:
        raise LossInputError(
            f"loss '{name}': channel counts differ (student {student.shape[1]}, teacher "
            f"{teacher.shape[1]}); map the student with a connector (1x1 conv) first"
        )


def resize(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize of ``[N, C, H, W]`` to ``size`` (align_corners=False); no-op if equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def match_larger(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Upsample whichever of two ``[N, C, H, W]`` maps is smaller to the other's size."""
    if student.shape[-2:] == teacher.shape[-2:]:
        return student, teacher
    if student.shape[-2] * student.shape[-1] < teacher.shape[-2] * teacher.shape[-1]:
        return resize(student, teacher.shape[-2:]), teacher
    return student, resize(teacher, student.shape[-2:])


def resize_labels(target: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Nearest resize of int labels ``[N, H, W]`` to ``size`` (labels are never interpolated)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    t = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")
    return t[:, 0].long()


def valid_mask(
    target: Tensor | None, ignore_index: int, size: torch.Size, batch: int
) -> Tensor | None:
    """Boolean ``[N, H, W]`` mask of pixels whose label is not ``ignore_index`` (None if no
    target), with the labels resized (nearest) to ``size``."""
    if target is None:
        return None
    if target.dim() != 3 or target.shape[0] != batch:
        raise LossInputError(
            f"target must be [N, H, W] labels with N={batch}, got shape {tuple(target.shape)}"
        )
    return resize_labels(target, size) != ignore_index


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values [N, H, W]`` over ``mask`` (all if None); 0 (with grad) if mask empty."""
    if mask is None:
        return values.mean()
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)
