"""Pair-wise similarity distillation (Liu et al., "Structured Knowledge Distillation for
Semantic Segmentation", CVPR 2019, the pair-wise term)."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.registry import LOSSES

from ._common import LossInputError, check_pair, fp32_forward, require_teacher


def node_grid(size: tuple[int, int], pool_size: tuple[int, int] | None, scale: float | None
              ) -> tuple[int, int]:
    """Grid of graph nodes for a ``size`` map: ``pool_size`` if given, else cells of
    ``int(scale * side)`` pixels (at least 1) as in the paper (``scale=0.5`` -> about 2x2)."""
    if pool_size is not None:
        return pool_size
    if scale is None or not 0 < scale <= 1:
        raise LossInputError(f"loss 'skd': need pool_size or 0 < scale <= 1, got scale={scale}")
    cells = [max(1, int(side * scale)) for side in size]
    return math.ceil(size[0] / cells[0]), math.ceil(size[1] / cells[1])


def similarity(feature: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine similarity of pooled nodes.

    Args:
        feature: ``[N, C, H, W]``; average-pooled (adaptive) to ``grid`` = ``M`` nodes.
    Returns:
        ``[N, M, M]``.
    """
    nodes = F.adaptive_avg_pool2d(feature, grid).flatten(2)  # [N, C, M]
    nodes = F.normalize(nodes, dim=1, eps=1e-8)
    return torch.bmm(nodes.transpose(1, 2), nodes)


def pairwise_similarity_kd(student: Tensor, teacher: Tensor, grid: tuple[int, int]) -> Tensor:
    """``sum((S_s - S_t)^2) / (M^2 * N)`` with ``S`` from :func:`similarity`.

    Args:
        student: ``[N, Cs, Hs, Ws]``; teacher: ``[N, Ct, H, W]`` (channels and sizes may differ:
        both are pooled to the same grid).
    Returns:
        scalar.
    """
    return (similarity(student, grid) - similarity(teacher, grid)).pow(2).mean()


@LOSSES.register("skd")
class PairwiseSimilarity(nn.Module):
    """SKD pair-wise term; ``pool_size`` (node grid) wins over ``scale`` when given."""

    def __init__(self, pool_size: int | tuple[int, int] | None = None, scale: float = 0.5
                 ) -> None:
        super().__init__()
        if isinstance(pool_size, int):
            pool_size = (pool_size, pool_size)
        self.pool_size = None if pool_size is None else (int(pool_size[0]), int(pool_size[1]))
        self.scale = scale

    @fp32_forward
    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        teacher = require_teacher("skd", teacher)
        check_pair("skd", student, teacher, same_channels=False)
        grid = node_grid(tuple(teacher.shape[-2:]), self.pool_size, self.scale)
        return pairwise_similarity_kd(student, teacher, grid)
