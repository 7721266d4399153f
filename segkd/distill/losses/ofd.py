"""Overhaul of Feature Distillation (Heo et al., "A Comprehensive Overhaul of Feature
Distillation", ICCV 2019): partial L2 against a margin-clipped pre-ReLU teacher feature.

Its teacher-side setup lives here too: :meth:`OFDLoss.bind` takes the margin from the teacher's
BatchNorm before the term's teacher position (or the one named by the ``margin_bn`` option)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from segkd.config.schema import Term
from segkd.core.errors import ConfigError
from segkd.core.registry import LOSSES
from segkd.distill.losses._common import LossInputError, check_pair, fp32_forward, require_teacher, resize
from segkd.distill.losses.contract import Loss
from segkd.distill.recorder import get_module


@torch.no_grad()
def ofd_margin(bn_weight: Tensor, bn_bias: Tensor, min_tail: float = 1e-3) -> Tensor:
    """Per-channel margin from the teacher's BatchNorm before the ReLU.

    With ``s = |gamma|`` and ``m = beta`` each channel is modelled as ``N(m, s^2)``; the margin
    is the expectation of its negative part, ``E[x | x < 0] = m - s * phi(m/s) / Phi(-m/s)``
    when ``Phi(-m/s) > min_tail``, else ``-3 s``.

    Args:
        bn_weight, bn_bias: ``[C]``.
    Returns:
        float32 ``[C]`` on ``bn_weight``'s device (no gradient).
    """
    s = bn_weight.detach().double().abs()
    m = bn_bias.detach().double().to(s.device)
    z = m / s
    tail = torch.special.ndtr(-z)  # Phi(-m/s)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # phi(m/s)
    margin = torch.where(tail > min_tail, m - s * pdf / tail, -3.0 * s)
    return margin.float()


def partial_l2(student: Tensor, teacher: Tensor, margin: Tensor) -> Tensor:
    """OFD distance ``sum((s - t')^2 over (s > t') | (t' > 0)) / N`` with ``t' = max(t, margin)``.

    Args:
        student: connector output ``[N, C, H, W]`` (pre-ReLU); teacher: same shape (pre-ReLU).
        margin: ``[C]`` (see :func:`ofd_margin`).
    Returns:
        scalar, summed over elements and divided by the batch size (the caller scales it).
    """
    target = torch.maximum(teacher, margin.view(1, -1, 1, 1))
    mask = (student > target) | (target > 0)
    diff = torch.where(mask, student - target, 0.0)
    return diff.pow(2).sum() / student.shape[0]


def bn_before(path: str, teacher: nn.Module) -> str:
    """The BatchNorm whose output feeds the activation at ``path`` (``X.actN`` -> ``X.bnN``,
    else the last BatchNorm registered before ``path`` in module order)."""
    head, _, leaf = path.rpartition(".")
    if leaf.startswith("act") and leaf[3:].isdigit():
        cand = f"{head}.bn{leaf[3:]}" if head else f"bn{leaf[3:]}"
        if cand in dict(teacher.named_modules()):
            return cand
    last, seen = None, False
    for name, m in teacher.named_modules():
        inside = name == path or name.startswith(path + ".")
        if seen and not inside:
            break  # past the module and its children
        seen = seen or inside
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            last = name
    if last is None:
        raise ConfigError(f"no BatchNorm before teacher path '{path}' to derive the OFD margin")
    return last


@LOSSES.register("ofd")
class OFDLoss(Loss):
    """OFD partial L2. The margin comes from ``extra['margin']``, :meth:`set_margin` or
    :meth:`bind` (the teacher's BatchNorm before the term's teacher position)."""

    inputs = "features"  # pre-ReLU features at module paths, never logits
    wiring = ("margin_bn",)  # option: the teacher BatchNorm path, when not the one before

    margin: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("margin", None, persistent=False)  # rebuilt from the teacher

    def set_margin(self, margin: Tensor) -> None:
        """Hold ``margin [C]`` (e.g. ``ofd_margin(bn.weight, bn.bias)``) for later calls."""
        self.margin = margin.detach().float().flatten()

    def bind(self, teacher: nn.Module, term: Term) -> None:
        """Take the margin from the teacher's BatchNorm: ``margin_bn`` when the term's options
        give it, else the one before ``term.teacher`` (see :func:`bn_before`)."""
        bn_path = term.options.get("margin_bn") or bn_before(str(term.teacher), teacher)
        bn = get_module(teacher, bn_path, "teacher")
        self.set_margin(ofd_margin(bn.weight, bn.bias))

    def _margin(self, extra: dict[str, Any], channels: int, device: torch.device) -> Tensor:
        margin = extra.get("margin", self.margin)
        if margin is None:
            raise LossInputError(
                "loss 'ofd' needs a margin: call set_margin(ofd_margin(bn.weight, bn.bias)) "
                "or pass margin=[C]"
            )
        margin = margin.detach().to(device=device, dtype=torch.float32).flatten()
        if margin.numel() != channels:
            raise LossInputError(
                f"loss 'ofd': margin has {margin.numel()} values, teacher has {channels} channels"
            )
        return margin

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("ofd", teacher)
        check_pair("ofd", student, teacher)
        margin = self._margin(extra, teacher.shape[1], teacher.device)
        return partial_l2(resize(student, teacher.shape[-2:]), teacher, margin)
