"""Flow of Solution Procedure (Yim et al., "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning", CVPR 2017): a multi-layer
relational loss between the Gram matrices of consecutive layers.

For the feature maps ``F1 [C1, h, w]`` at the start and ``F2 [C2, h, w]`` at the end of a
section, the FSP matrix is

    G[i, j] = (1 / (h * w)) * sum_{s, t} F1[i, s, t] * F2[j, s, t]        (G: [C1, C2])

and the loss over sections ``k = 1..K`` and a batch of ``N`` images is

    L = sum_k lambda_k * (1 / N) * sum_x || G_k^S(x) - G_k^T(x) ||_2^2

(the squared L2 norm of the matrix: the sum of its squared entries). The term's ``student`` and
``teacher`` are lists of ``K + 1`` positions; section ``k`` runs from position ``k`` to ``k + 1``.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.config.schema import Term
from segkd.core.errors import ConfigError
from segkd.core.registry import LOSSES
from segkd.distill.losses._common import LossInputError, check_4d, fp32_forward, require_teacher
from segkd.distill.losses.contract import Loss

REDUCTIONS = ("sum", "mean")
MATCH_SIZES = ("pool", "none")


def fsp_matrix(first: Tensor, second: Tensor, match_size: str = "pool") -> Tensor:
    """The FSP matrix of a section, per sample.

    Args:
        first: ``[N, C1, H1, W1]``, the section's start; second: ``[N, C2, h, w]``, its end.
        match_size: ``pool``: when the sizes differ, ``first`` is adaptive-average-pooled to
            ``(h, w)`` first (to a larger size this repeats pixels); ``none``: they must match.
    Returns:
        ``[N, C1, C2]``: ``G[n, i, j] = sum_{s,t} first[n, i, s, t] * second[n, j, s, t] / (h*w)``.
    """
    check_4d("fsp", first=first, second=second)
    if first.shape[0] != second.shape[0]:
        raise LossInputError(f"loss 'fsp': batch sizes differ ({first.shape[0]} and {second.shape[0]})")
    size = tuple(second.shape[-2:])
    if tuple(first.shape[-2:]) != size:
        if match_size == "none":
            raise LossInputError(f"loss 'fsp': a section's maps differ in size ({tuple(first.shape[-2:])} "
                                 f"and {size}) and match_size is none; use match_size: pool")
        first = F.adaptive_avg_pool2d(first, size)
    return torch.bmm(first.flatten(2), second.flatten(2).transpose(1, 2)) / (size[0] * size[1])


def fsp_loss(student: Sequence[Tensor], teacher: Sequence[Tensor],
             weights: Sequence[float] | None = None, reduction: str = "sum",
             match_size: str = "pool") -> Tensor:
    """``sum_k lambda_k * mean_n ||G_k^S[n] - G_k^T[n]||^2`` over the sections of ``K + 1`` maps.

    Args:
        student, teacher: ``K + 1`` maps ``[N, C_k, H_k, W_k]`` each (``K >= 1``); the student's
            ``k``-th has the teacher's ``k``-th channel count (spatial sizes may differ between
            student and teacher: ``G`` does not depend on them).
        weights: ``lambda_k``, ``K`` values; default ``1 / K`` each (the paper's equal weights,
            scaled so that the loss is the mean over sections).
        reduction: ``sum``: the squared L2 norm of ``G^S - G^T`` (its ``C1 x C2`` squared entries
            summed, the paper); ``mean``: their mean (every section on the same scale).
        match_size: see :func:`fsp_matrix`.
    Returns:
        scalar.
    """
    if len(student) != len(teacher) or len(student) < 2:
        raise LossInputError(f"loss 'fsp': needs as many student as teacher maps, at least 2 "
                             f"(one section); got {len(student)} and {len(teacher)}")
    sections = len(student) - 1
    lam = list(weights) if weights is not None else [1.0 / sections] * sections
    if len(lam) != sections:
        raise LossInputError(f"loss 'fsp': {len(lam)} weights for {sections} sections")
    total = student[0].new_zeros(())
    for k in range(sections):
        g_s = fsp_matrix(student[k], student[k + 1], match_size)
        g_t = fsp_matrix(teacher[k], teacher[k + 1], match_size)
        if g_s.shape != g_t.shape:
            raise LossInputError(
                f"loss 'fsp': section {k} matrices differ (student {tuple(g_s.shape[1:])}, teacher "
                f"{tuple(g_t.shape[1:])}): map the student's channels with connectors first")
        sq = (g_s - g_t).pow(2).flatten(1)
        total = total + lam[k] * (sq.sum(1) if reduction == "sum" else sq.mean(1)).mean()
    return total


@LOSSES.register("fsp")
class FSPLoss(Loss):
    """FSP matrices (Yim et al. CVPR 2017) over a list of layers; reduction: sum (paper, default) | mean.

    ``student`` / ``teacher``: lists of ``K + 1`` positions (``K`` sections, consecutive pairs);
    channels are matched per position by the term's connectors. ``match_size``: ``pool``
    (default) adaptive-average-pools a section's first map to its second's size; ``none``
    requires equal sizes (the formula as written). ``weights``: ``lambda_k`` (default ``1/K``)."""

    inputs = "features"
    takes_lists = True
    min_paths = 2

    def __init__(self, weights: Sequence[float] | None = None,
                 reduction: Literal["sum", "mean"] = "sum",
                 match_size: Literal["pool", "none"] = "pool") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise LossInputError(f"loss 'fsp': reduction must be one of {REDUCTIONS}, got '{reduction}'")
        if match_size not in MATCH_SIZES:
            raise LossInputError(f"loss 'fsp': match_size must be one of {MATCH_SIZES}, got '{match_size}'")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.reduction, self.match_size = reduction, match_size

    def bind(self, teacher: nn.Module, term: Term) -> None:
        """Check ``weights`` against the term's sections when a stage starts (not at a step)."""
        sections = len(term.student) - 1
        if self.weights is not None and len(self.weights) != sections:
            raise ConfigError(f"term '{term.name}' (loss 'fsp'): options.weights has "
                              f"{len(self.weights)} values for {sections} sections "
                              f"({len(term.student)} positions)")

    @fp32_forward
    def forward(self, student: list[Tensor], teacher: list[Tensor] | None = None,
                **extra: Any) -> Tensor:
        teacher = require_teacher("fsp", teacher)
        if isinstance(student, Tensor) or isinstance(teacher, Tensor):
            raise LossInputError("loss 'fsp': takes lists of feature maps (a term with lists of paths)")
        return fsp_loss(student, teacher, self.weights, self.reduction, self.match_size)
