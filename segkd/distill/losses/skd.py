"""Pair-wise similarity distillation (Liu et al., "Structured Knowledge Distillation for
Semantic Segmentation", CVPR 2019, the pair-wise term).

Two variants, both from public code:

- ``skd`` (default, the SKD authors' code): nodes = max-pool with a kernel (and stride) of
  ``int(scale * side)`` of the teacher map, ceil mode (``scale=0.5``: about 2x2 nodes);
  each node divided by ``(L2 norm over channels + 1e-8)`` with the norm DETACHED (no gradient
  through the normalisation); ``sum((S_t - S_s)^2) / M^2 / N``.
- ``cirkd`` (CIRKD's re-implementation, the usual Cityscapes benchmark setting): a fixed 2x2
  max-pool (ceil mode), ``F.normalize`` (norm clamped at 1e-12, gradient through it),
  ``mean((S_s - S_t)^2)`` over ``N * M * M`` (the same reduction as ``skd``).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from segkd.core.registry import LOSSES
from segkd.distill.losses._common import LossInputError, check_pair, fp32_forward, require_teacher, resize
from segkd.distill.losses.contract import Loss

VARIANTS = ("skd", "cirkd")


def pool_kernel(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The SKD node size for a ``size`` (H, W) map: ``int(scale * side)`` pixels, at least 1."""
    if not 0 < scale <= 1:
        raise LossInputError(f"loss 'skd': scale must be in (0, 1], got {scale}")
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def pool_nodes(feature: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Max-pool ``[N, C, H, W]`` with kernel = stride = ``kernel``, ceil mode (partial cells at
    the border are nodes too) -> ``[N, C, h, w]``."""
    return F.max_pool2d(feature, kernel, stride=kernel, padding=0, ceil_mode=True)


def similarity(nodes: Tensor, detach_norm: bool = True) -> Tensor:
    """Cosine similarity of every pair of nodes.

    Args:
        nodes: ``[N, C, h, w]`` (``M = h * w`` nodes).
        detach_norm: True: divide by ``(||x|| + 1e-8)`` with the norm detached (the SKD
            authors' code); False: ``F.normalize`` (gradient through the norm; CIRKD).
    Returns:
        ``[N, M, M]``.
    """
    flat = nodes.flatten(2)  # [N, C, M]
    if detach_norm:
        flat = flat / (flat.norm(dim=1, keepdim=True) + 1e-8).detach()
    else:
        flat = F.normalize(flat, dim=1)
    return torch.bmm(flat.transpose(1, 2), flat)


def pairwise_similarity_kd(student: Tensor, teacher: Tensor, kernel: tuple[int, int],
                           detach_norm: bool = True) -> Tensor:
    """``sum((S_t - S_s)^2) / (M^2 * N)`` with ``S`` the similarity of max-pooled nodes.

    Args:
        student: ``[N, Cs, H, W]``; teacher: ``[N, Ct, H, W]`` (channels may differ).
        kernel: node size in pixels (see :func:`pool_kernel`).
    Returns:
        scalar.
    """
    s = similarity(pool_nodes(student, kernel), detach_norm)
    t = similarity(pool_nodes(teacher, kernel), detach_norm)
    return (t - s).pow(2).mean()


@LOSSES.register("skd")
class PairwiseSimilarity(Loss):
    """SKD pair-wise term; variant: skd (default, the authors' code) | cirkd (CIRKD's).

    ``skd``: max-pool cells of ``int(scale * side)``, detached normalisation; ``cirkd``: 2x2
    max-pool, ``F.normalize``. ``kernel`` (int or (h, w)) fixes the node size in either variant.
    A student map of another size is resized (bilinear) to the teacher's first."""

    def __init__(self, variant: Literal["skd", "cirkd"] = "skd", scale: float = 0.5,
                 kernel: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise LossInputError(f"loss 'skd': variant must be one of {VARIANTS}, got '{variant}'")
        if kernel is None and variant == "cirkd":
            kernel = 2
        if isinstance(kernel, int):
            kernel = (kernel, kernel)
        if kernel is not None and min(kernel) < 1:
            raise LossInputError(f"loss 'skd': kernel must be >= 1, got {kernel}")
        self.variant, self.scale = variant, scale
        self.kernel = None if kernel is None else (int(kernel[0]), int(kernel[1]))
        pool_kernel((1, 1), scale)  # validates scale now, not at the first step

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("skd", teacher)
        check_pair("skd", student, teacher, same_channels=False)
        student = resize(student, teacher.shape[-2:])
        kernel = self.kernel or pool_kernel(tuple(teacher.shape[-2:]), self.scale)
        return pairwise_similarity_kd(student, teacher, kernel, self.variant == "skd")
