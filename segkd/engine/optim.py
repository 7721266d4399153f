"""Optimisers with parameter groups (lr multipliers) and per-iteration schedules."""
from __future__ import annotations

import math
from fnmatch import fnmatchcase

import torch
import torch.nn as nn

from ..config import OptimCfg, SchedCfg
from ..errors import ConfigError


def param_groups(module: nn.Module, cfg: OptimCfg, exclude: set[int] | frozenset = frozenset(),
                 allow_empty: bool = False) -> list[dict]:
    """Split the trainable parameters of ``module`` into the configured groups.

    Each ``cfg.param_groups`` entry takes the parameters whose names match one of its globs
    (first match wins); the rest form the default group. Frozen parameters are never included,
    nor those whose ``id`` is in ``exclude`` (already in an optimizer being extended).
    """
    groups = [{"params": [], "lr": cfg.lr * g.lr_mult, "lr_mult": g.lr_mult,
               "weight_decay": cfg.weight_decay if g.weight_decay is None else g.weight_decay}
              for g in cfg.param_groups]
    default = {"params": [], "lr": cfg.lr, "lr_mult": 1.0, "weight_decay": cfg.weight_decay}
    for full, p in module.named_parameters():
        if not p.requires_grad or id(p) in exclude:
            continue
        name = full.removeprefix("student.")  # globs address student paths (and connectors.*)
        idx = next((i for i, g in enumerate(cfg.param_groups)
                    if any(fnmatchcase(name, pat) for pat in g.params)), None)
        (default if idx is None else groups[idx])["params"].append(p)
    out = [g for g in [default, *groups] if g["params"]]
    if not out and not allow_empty:
        raise ConfigError("this stage has no trainable parameters: check its `trainable` globs")
    return out


def build_optimizer(module: nn.Module, cfg: OptimCfg) -> torch.optim.Optimizer:
    groups = param_groups(module, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[cfg.name]
    kw = {}
    if cfg.name in ("adam", "adamw") and _fused_ok(groups):
        kw["fused"] = True  # one kernel for the whole update: 7x faster Adam step on CPU
    return cls(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kw)


def extend_optimizer(opt: torch.optim.Optimizer, module: nn.Module, cfg: OptimCfg) -> int:
    """Continue ``opt`` into a new stage (Plug and Play's incremental plan): parameters no longer
    in ``module`` (a conv since replaced) leave it with their state, groups left empty go, and
    the trainable parameters it does not hold yet join as new groups at ``cfg.lr`` (x their
    ``lr_mult``), as the original adds each newly replaced conv with ``add_param_group``.
    Groups already there keep their learning rate and state. Returns the number of new groups.
    """
    if cfg.name != _kind(opt):
        raise ConfigError(f"optimizer.continue_previous: the previous stage's optimizer is "
                          f"{_kind(opt)}, this stage asks for {cfg.name}")
    alive = {id(p) for p in module.parameters()}
    for group in opt.param_groups:
        for p in [p for p in group["params"] if id(p) not in alive]:
            opt.state.pop(p, None)
        group["params"] = [p for p in group["params"] if id(p) in alive]
    opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    new = param_groups(module, cfg, exclude=held, allow_empty=True)
    for group in new:
        opt.add_param_group(group)
    return len(new)


def _kind(opt: torch.optim.Optimizer) -> str:
    return {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw",
            torch.optim.RAdam: "radam"}.get(type(opt), type(opt).__name__)


def _fused_ok(groups: list[dict]) -> bool:
    """Fused Adam needs torch >= 2.4 on CPU and float tensors on cpu/cuda."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    params = [p for g in groups for p in g["params"]]
    return (major, minor) >= (2, 4) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


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


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedCfg, total_iters: int,
                    base_lr: float, offset: int = 0) -> tuple[object | None, str]:
    """Return (scheduler, when) where ``when`` is 'iter', 'epoch' or 'plateau'.

    ``offset``/``total_iters``: a poly or cosine curve spanning several stages (``across_stages``)
    starts this stage at step ``offset`` of ``total_iters``.
    """
    if cfg.across_stages and cfg.name not in ("poly", "cosine", "none"):
        raise ConfigError(f"schedule.across_stages works with poly and cosine, not {cfg.name}")
    if cfg.name == "none":
        return None, "iter"
    if cfg.name in ("poly", "cosine"):
        fn = PolyWarmup(total_iters, cfg.name, cfg.power, cfg.warmup_iters, cfg.min_lr / base_lr,
                        offset)
        return torch.optim.lr_scheduler.LambdaLR(opt, fn), "iter"
    if cfg.name == "onecycle":
        max_lr = cfg.max_lr or base_lr
        mults = [g.get("lr_mult", 1.0) for g in opt.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[max_lr * m for m in mults], total_steps=max(1, total_iters),
            pct_start=cfg.pct_start, anneal_strategy=cfg.anneal_strategy,
            cycle_momentum=cfg.cycle_momentum, base_momentum=cfg.base_momentum,
            max_momentum=cfg.max_momentum, div_factor=cfg.div_factor,
            final_div_factor=cfg.final_div_factor)
        return sched, "iter"
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr,
            threshold=cfg.threshold, threshold_mode=cfg.threshold_mode,
            cooldown=cfg.cooldown), "plateau"
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.factor), "epoch"
