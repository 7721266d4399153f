"""Learning-rate schedules by name, each with a config type of its own.

A schedule is one class: its keys (a strict pydantic model, so a key that does not apply to it
is an error), when it steps (``when``: every optimizer step, every epoch, or on the epoch's
training loss) and ``build(opt, total, base_lr, offset)``: a subclass of ``ScheduleCfg`` with
``@SCHEDULES.register(name)`` (docs/architecture.md, "Adding a schedule").

``stages[i].schedule`` in a config is validated by the class its ``name`` names
(:func:`schedule_from_dict`).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segkd.core.registry import Registry, suggest

SCHEDULES = Registry("schedule")


class ScheduleCfg(BaseModel):
    """The keys every schedule has (its name); subclasses add their own."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str = "none"
    when: ClassVar[str] = "iter"  # "iter" | "epoch" | "plateau" (stepped with the epoch's loss)
    # a curve over this stage and the consecutive stages that also set it (poly and cosine)
    spans_stages: ClassVar[bool] = False

    @property
    def across(self) -> bool:
        return bool(getattr(self, "across_stages", False))

    def build(self, opt, total: int, base_lr: float, offset: int = 0):  # pragma: no cover
        raise NotImplementedError


@SCHEDULES.register("none")
class NoSchedule(ScheduleCfg):
    """A constant learning rate."""

    name: Literal["none"] = "none"

    def build(self, opt, total: int, base_lr: float, offset: int = 0):
        return None


class _Decay(ScheduleCfg):
    warmup_iters: int = Field(0, ge=0)  # linear warm-up steps
    min_lr: float = Field(0.0, ge=0.0)
    # one curve over this stage and the consecutive stages that also set it (length = their
    # steps summed; each starts where the previous ended), as the original OFD runs one poly
    # schedule over its connector epoch and the training epochs
    across_stages: bool = False
    spans_stages: ClassVar[bool] = True

    def build(self, opt, total: int, base_lr: float, offset: int = 0):
        import torch

        fn = PolyWarmup(total, self.name, getattr(self, "power", 1.0), self.warmup_iters,
                        self.min_lr / base_lr, offset)
        return torch.optim.lr_scheduler.LambdaLR(opt, fn)


@SCHEDULES.register("poly")
class PolySchedule(_Decay):
    """lr x (1 - t/T)^power per step, after an optional linear warm-up."""

    name: Literal["poly"] = "poly"
    power: float = 0.9


@SCHEDULES.register("cosine")
class CosineSchedule(_Decay):
    """Cosine decay to min_lr per step, after an optional linear warm-up."""

    name: Literal["cosine"] = "cosine"


@SCHEDULES.register("onecycle")
class OneCycleSchedule(ScheduleCfg):
    """torch's OneCycleLR over the stage's steps (peak ``max_lr``, default: the optimizer lr)."""

    name: Literal["onecycle"] = "onecycle"
    max_lr: Optional[float] = None
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)  # warm-up fraction (torch's default)
    anneal_strategy: Literal["cos", "linear"] = "cos"
    # torch's default is True (momentum / Adam's beta1 cycled max -> base -> max); kept False so
    # that recipes written without it keep a constant beta1 (the kdsemseg recipes set it)
    cycle_momentum: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def build(self, opt, total: int, base_lr: float, offset: int = 0):
        import torch

        max_lr = self.max_lr or base_lr
        mults = [g.get("lr_mult", 1.0) for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[max_lr * m for m in mults], total_steps=max(1, total),
            pct_start=self.pct_start, anneal_strategy=self.anneal_strategy,
            cycle_momentum=self.cycle_momentum, base_momentum=self.base_momentum,
            max_momentum=self.max_momentum, div_factor=self.div_factor,
            final_div_factor=self.final_div_factor)


@SCHEDULES.register("plateau")
class PlateauSchedule(ScheduleCfg):
    """torch's ReduceLROnPlateau on the epoch's mean training loss."""

    name: Literal["plateau"] = "plateau"
    factor: float = Field(0.5, gt=0.0, lt=1.0)
    patience: int = Field(0, ge=0)
    threshold: float = 1e-4  # the least improvement that counts (torch's default)
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: int = Field(0, ge=0)  # epochs after a reduction before bad epochs count again
    min_lr: float = Field(0.0, ge=0.0)
    when: ClassVar[str] = "plateau"

    def build(self, opt, total: int, base_lr: float, offset: int = 0):
        import torch

        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=self.factor, patience=self.patience, min_lr=self.min_lr,
            threshold=self.threshold, threshold_mode=self.threshold_mode, cooldown=self.cooldown)


@SCHEDULES.register("step")
class StepSchedule(ScheduleCfg):
    """lr x factor every ``step_epochs`` epochs."""

    name: Literal["step"] = "step"
    step_epochs: int = Field(30, ge=1)
    factor: float = Field(0.5, gt=0.0)
    when: ClassVar[str] = "epoch"

    def build(self, opt, total: int, base_lr: float, offset: int = 0):
        import torch

        return torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_epochs, gamma=self.factor)


class PolyWarmup:
    """lr factor for poly (``(1 - it/N)^power``) or cosine decay with linear warm-up."""

    def __init__(self, total: int, kind: str, power: float, warmup: int, min_ratio: float,
                 offset: int = 0) -> None:
        self.total, self.kind, self.power = max(1, total), kind, power
        self.warmup, self.min_ratio, self.offset = warmup, min_ratio, offset

    def __call__(self, it: int) -> float:
        """The factor at step ``it`` of this stage: step ``offset + it`` of a curve of ``total``."""
        it = it + self.offset
        if it < self.warmup:
            return (it + 1) / self.warmup
        t = min(1.0, (it - self.warmup) / max(1, self.total - self.warmup))
        f = (1 - t) ** self.power if self.kind == "poly" else 0.5 * (1 + math.cos(math.pi * t))
        return self.min_ratio + (1 - self.min_ratio) * f


# The keys of the one schedule config that configs and checkpoints written before schedules had
# types of their own carry, all of them, whatever the schedule: such a dump is read by keeping
# the keys its schedule has (a file a person writes never holds all of them). The earliest dumps
# predate threshold, threshold_mode, cooldown and across_stages: the rest is what marks a dump.
LEGACY_KEYS = frozenset({
    "name", "power", "max_lr", "pct_start", "anneal_strategy", "cycle_momentum", "base_momentum",
    "max_momentum", "div_factor", "final_div_factor", "warmup_iters", "min_lr", "factor",
    "patience", "step_epochs"})


def schedule_from_dict(value: Any) -> ScheduleCfg:
    """The schedule config a ``schedule:`` mapping describes (an instance passes through).

    Raises ValueError with one readable sentence: an unknown name (with suggestions), or the
    keys that do not apply to this schedule (with the ones that do)."""
    if isinstance(value, ScheduleCfg):
        return value
    if value is None:
        return NoSchedule()
    if not isinstance(value, dict):
        raise ValueError(f"a schedule is a mapping with a `name`, got {value!r}")
    name = value.get("name", "none")
    if name not in SCHEDULES:
        known = SCHEDULES.names()
        raise ValueError(f"unknown schedule '{name}'.{suggest(str(name), known)} Known: {', '.join(known)}")
    cls = SCHEDULES.get(name)
    keys = set(cls.model_fields)
    if LEGACY_KEYS <= set(value):
        value = {k: v for k, v in value.items() if k in keys}
    foreign = sorted(set(value) - keys)
    if foreign:
        raise ValueError(f"{', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply to "
                         f"schedule '{name}' (its keys: {', '.join(k for k in cls.model_fields)})")
    try:
        return cls.model_validate(value)
    except ValidationError as err:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                 + (f" (got {e['input']!r})" if not isinstance(e.get("input"), (dict, list)) else "")
                 for e in err.errors()]
        raise ValueError(f"schedule '{name}': " + "; ".join(parts)) from None
