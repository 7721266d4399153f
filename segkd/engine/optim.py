"""Optimisers with parameter groups (lr multipliers) and per-iteration schedules."""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch
import torch.nn as nn

from segkd.config.optimizers import optimizer_class
from segkd.config.schedules import PolyWarmup, ScheduleCfg  # noqa: F401  (PolyWarmup: re-exported)
from segkd.config.schema import OptimCfg
from segkd.core.errors import ConfigError


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
    """The stage's optimizer (any registered or torch.optim one, segkd/config/optimizers.py) over the
    trainable parameters of ``module``, split into the configured groups."""
    groups = param_groups(module, cfg)
    cls = optimizer_class(cfg.name)
    kw = cfg.kwargs()
    if cls in (torch.optim.Adam, torch.optim.AdamW) and "fused" not in kw and _fused_ok(groups):
        kw["fused"] = True  # one kernel for the whole update: 7x faster Adam step on CPU
    return cls(groups, lr=cfg.lr, **kw)


def extend_optimizer(opt: torch.optim.Optimizer, module: nn.Module, cfg: OptimCfg) -> int:
    """Continue ``opt`` into a new stage (Plug and Play's incremental plan): parameters no longer
    in ``module`` (a conv since replaced) leave it with their state, groups left empty go, and
    the trainable parameters it does not hold yet join as new groups at ``cfg.lr`` (x their
    ``lr_mult``), as the original adds each newly replaced conv with ``add_param_group``.
    Groups already there keep their learning rate and state. Returns the number of new groups.
    """
    if type(opt) is not optimizer_class(cfg.name):
        raise ConfigError(f"optimizer.continue_previous: the previous stage's optimizer is "
                          f"{type(opt).__name__}, this stage asks for {cfg.name}")
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


def _fused_ok(groups: list[dict]) -> bool:
    """Fused Adam needs torch >= 2.4 on CPU and float tensors on cpu/cuda."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    params = [p for g in groups for p in g["params"]]
    return (major, minor) >= (2, 4) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleCfg, total_iters: int,
                    base_lr: float, offset: int = 0) -> tuple[object | None, str]:
    """Return (scheduler, when) where ``when`` is 'iter', 'epoch' or 'plateau'.

    ``offset``/``total_iters``: a poly or cosine curve spanning several stages (``across_stages``)
    starts this stage at step ``offset`` of ``total_iters``.
    """
    return cfg.build(opt, total_iters, base_lr, offset), cfg.when
