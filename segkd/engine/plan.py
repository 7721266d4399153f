"""How stages chain: which student parameters train in a stage, where a schedule spanning several
stages starts, and which earlier stages share a continued optimizer (Plug and Play, OFD).

Pure functions over the stage configs and the run's replacement records
(``{"paths", "block", "options", "stage"}``; the teacher's own replacements carry no ``stage``).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from segkd.config.schema import StageCfg
from segkd.core.errors import ConfigError
from segkd.distill.freeze import set_trainable


def replaced_paths(replacements: list[dict], upto: int | None = None,
                   after: int | None = None) -> list[str]:
    """Module paths of the cheap blocks this run installed at stage ``<= upto`` (or ``> after``)."""
    out = []
    for r in replacements:
        s = r.get("stage")
        if s is None:  # the teacher's own blocks (a Plug and Play student as teacher)
            continue
        if (upto is not None and s <= upto) or (after is not None and s > after):
            out += list(r["paths"])
    return out


def stage_trainable(model: nn.Module, stage: StageCfg, si: int, replacements: list[dict],
                    hide_later: bool = False) -> int:
    """Set ``requires_grad`` for stage ``si``: its ``trainable``/``frozen`` globs, plus the blocks
    this run replaced up to this stage when ``stage.train_replaced``. ``hide_later`` freezes the
    blocks of later stages (rebuilding stage ``si`` on a model that already holds them, on
    resume). Returns the number of trainable tensors."""
    extra = replaced_paths(replacements, upto=si) if stage.train_replaced else []
    set_trainable(model, list(stage.trainable) + extra, stage.frozen)
    if hide_later:
        modules = dict(model.named_modules())
        for path in replaced_paths(replacements, after=si):
            modules[path].requires_grad_(False)
    return sum(int(p.requires_grad) for p in model.parameters())


def optimizer_chain(stages: list[StageCfg], si: int) -> list[int]:
    """Indices of the stages whose optimizer stage ``si`` continues (``continue_previous``),
    oldest first, ``si`` excluded; empty when it starts a fresh one."""
    j = si
    while j > 0 and stages[j].optimizer.continue_previous:
        j -= 1
    return list(range(j, si))


def schedule_span(stages: list[StageCfg], si: int, steps_of: Callable[[int], int]) -> tuple[int, int]:
    """(offset, total) steps of stage ``si``'s schedule: ``(0, its own steps)``, or, with
    ``schedule.across_stages``, its start and the length of the curve over the consecutive
    stages that set it (``steps_of(j)``: optimizer steps of stage ``j``)."""
    if not stages[si].schedule.across:
        return 0, steps_of(si)
    first, last = si, si
    while first > 0 and stages[first - 1].schedule.across:
        first -= 1
    while last + 1 < len(stages) and stages[last + 1].schedule.across:
        last += 1
    names = {stages[j].schedule.name for j in range(first, last + 1)}
    if len(names) > 1:
        raise ConfigError(f"stages {first + 1}-{last + 1} share one schedule (across_stages) "
                          f"but name different ones: {', '.join(sorted(names))}")
    steps = {j: steps_of(j) for j in range(first, last + 1)}
    return sum(steps[j] for j in range(first, si)), sum(steps.values())
