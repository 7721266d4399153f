"""Optimisers with parameter groups (lr multipliers) and per-iteration schedules."""
from __future__ import annotations

import math
from fnmatch import fnmatchcase

import torch
import torch.nn as nn

from ..config import OptimCfg, SchedCfg
from ..errors import ConfigError


def param_groups(module: nn.Module, cfg: OptimCfg) -> list[dict]:
    """Split the trainable parameters of ``module`` into the configured groups.

    Each ``cfg.param_groups`` entry takes the parameters whose names match one of its globs
    (first match wins); the rest form the default group. Frozen parameters are never included.
    """
    groups = [{"params": [], "lr": cfg.lr * g.lr_mult, "lr_mult": g.lr_mult,
               "weight_decay": cfg.weight_decay if g.weight_decay is None else g.weight_decay}
              for g in cfg.param_groups]
    default = {"params": [], "lr": cfg.lr, "lr_mult": 1.0, "weight_decay": cfg.weight_decay}
    for full, p in module.named_parameters():
        if not p.requires_grad:
            continue
        name = full.removeprefix("student.")  # globs address student paths (and connectors.*)
        idx = next((i for i, g in enumerate(cfg.param_groups)
                    if any(fnmatchcase(name, pat) for pat in g.params)), None)
        (default if idx is None else groups[idx])["params"].append(p)
    out = [g for g in [default, *groups] if g["params"]]
    if not out:
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


def _fused_ok(groups: list[dict]) -> bool:
    """Fused Adam needs torch >= 2.4 on CPU and float tensors on cpu/cuda."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    params = [p for g in groups for p in g["params"]]
    return (major, minor) >= (2, 4) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


class PolyWarmup:
    """lr factor for poly (``(1 - it/N)^power``) or cosine decay with linear warm-up."""

    def __init__(self, total: int, kind: str, power: float, warmup: int, min_ratio: float) -> None:
        self.total, self.kind, self.power = max(1, total), kind, power
        self.warmup, self.min_ratio = warmup, min_ratio

    def __call__(self, it: int) -> float:
        if it < self.warmup:
            return (it + 1) / self.warmup
        t = min(1.0, (it - self.warmup) / max(1, self.total - self.warmup))
        f = (1 - t) ** self.power if self.kind == "poly" else 0.5 * (1 + math.cos(math.pi * t))
        return self.min_ratio + (1 - self.min_ratio) * f


def build_scheduler(opt: torch.optim.Optimizer, cfg: SchedCfg, total_iters: int,
                    base_lr: float) -> tuple[object | None, str]:
    """Return (scheduler, when) where ``when`` is 'iter', 'epoch' or 'plateau'."""
    if cfg.name == "none":
        return None, "iter"
    if cfg.name in ("poly", "cosine"):
        fn = PolyWarmup(total_iters, cfg.name, cfg.power, cfg.warmup_iters, cfg.min_lr / base_lr)
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
            opt, mode="min", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr), "plateau"
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.factor), "epoch"
