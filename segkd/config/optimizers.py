"""Optimizers by name: the registered ones (``segkd list optimizers``) and any ``torch.optim``
class by its name (``NAdam``, ``Adagrad``, ...). An option the optimizer's constructor does not
take is an error naming the options it does take.

Register another optimizer class (a plug-in, or a third-party one)::

    from segkd.config.optimizers import OPTIMIZERS
    OPTIMIZERS.register("lion", lambda: Lion)   # a callable returning the class
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Optional

from pydantic import model_validator

from segkd.config.strict import StrictModel
from segkd.core.registry import Registry, suggest

OPTIMIZERS = Registry("optimizer")
for _short, _cls in {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "radam": "RAdam"}.items():
    OPTIMIZERS.register(_short, lambda _cls=_cls: getattr(importlib.import_module("torch.optim"), _cls))

# options with a segkd default where torch has none (SGD's momentum: the seeds' 0.9)
DEFAULTS = {"sgd": {"momentum": 0.9}}


def optimizer_class(name: str) -> type:
    """The optimizer class ``name`` names: a registered name, else a ``torch.optim`` class
    (matched without regard to case)."""
    if name in OPTIMIZERS:
        return OPTIMIZERS.get(name)()
    import torch.optim

    classes = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)
               if isinstance(getattr(torch.optim, n), type)
               and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
               and n != "Optimizer"}
    if name.lower() in classes:
        return classes[name.lower()]
    known = OPTIMIZERS.names() + sorted(c.__name__ for c in classes.values())
    raise ValueError(f"unknown optimizer '{name}'.{suggest(name, known)} Known: registered "
                     f"{', '.join(OPTIMIZERS.names())}, or a torch.optim class: "
                     f"{', '.join(sorted(c.__name__ for c in classes.values()))}")


def constructor_options(cls: type) -> list[str]:
    """The keyword options of an optimizer class (without ``params`` and ``lr``)."""
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", "params", "lr")
            and params[p].kind not in (params[p].VAR_POSITIONAL, params[p].VAR_KEYWORD)]


def check_options(name: str, options: dict[str, Any]) -> None:
    """ValueError when an option is not one of the optimizer's constructor options."""
    cls = optimizer_class(name)
    known = constructor_options(cls)
    bad = sorted(k for k in options if k not in known)
    if bad:
        raise ValueError(f"{', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not apply to optimizer "
                         f"'{name}' ({cls.__name__} takes: {', '.join(known)})")


def optimizer_kwargs(cfg) -> dict[str, Any]:
    """The keyword options an ``OptimCfg`` gives its optimizer (lr and the parameter groups
    apart): segkd's defaults for it, weight_decay where it takes one (a nonzero one it does not
    take is kept, so that :func:`check_options` refuses it), the common options that are set,
    then ``options``."""
    out = dict(DEFAULTS.get(cfg.name, {}))
    if cfg.weight_decay or "weight_decay" in constructor_options(optimizer_class(cfg.name)):
        out["weight_decay"] = cfg.weight_decay
    for key, value in (("momentum", cfg.momentum), ("nesterov", cfg.nesterov), ("betas", cfg.betas)):
        if value is not None:
            out[key] = value
    out.update(cfg.options)
    return out


class ParamGroupCfg(StrictModel):
    params: list[str]  # globs over parameter names of the student (and connectors.*)
    lr_mult: float = 1.0
    weight_decay: Optional[float] = None


class OptimCfg(StrictModel):
    # a registered name (sgd, adam, adamw, radam: `segkd list optimizers`) or any torch.optim
    # class by its name (NAdam, Adagrad, RMSprop, ...)
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: Optional[float] = None  # SGD (default 0.9), RMSprop, ...
    nesterov: Optional[bool] = None  # SGD
    betas: Optional[tuple[float, float]] = None  # Adam family (default torch's (0.9, 0.999))
    options: dict[str, Any] = {}  # any other keyword option of the optimizer (eps, amsgrad, ...)
    param_groups: list[ParamGroupCfg] = []
    # keep the previous stage's optimizer (its groups, learning rates and state) and add the
    # parameters that newly train as new groups at this stage's lr: Plug and Play's incremental
    # plan (the original adds each replaced conv with add_param_group); false: a fresh optimizer
    continue_previous: bool = False

    @model_validator(mode="before")
    @classmethod
    def _legacy_dump(cls, v: Any) -> Any:
        """Configs saved when every optimizer carried momentum 0.9, nesterov false and betas
        (0.9, 0.999), whether it used them or not: keep only those its optimizer takes; then
        ``_defaults_unset``."""
        if not isinstance(v, dict) or not {"momentum", "nesterov", "betas"} <= set(v):
            return cls._defaults_unset(v)
        if v["momentum"] != 0.9 or v["nesterov"] is not False or list(v["betas"] or []) != [0.9, 0.999]:
            return cls._defaults_unset(v)
        try:
            takes = constructor_options(optimizer_class(str(v.get("name", "adam"))))
        except ValueError:
            return v
        return cls._defaults_unset(
            {k: x for k, x in v.items() if k not in ("momentum", "nesterov", "betas") or k in takes})

    @staticmethod
    def _defaults_unset(v: Any) -> Any:
        """momentum / nesterov / betas written at the value the optimizer gets without them
        (segkd's default for it, else torch's) mean "unset": one config whether a dump spelt the
        default out or not (runs group together in reports)."""
        if not isinstance(v, dict):
            return v
        name = str(v.get("name", "adam"))
        try:
            params = inspect.signature(optimizer_class(name).__init__).parameters
        except ValueError:
            return v
        out = dict(v)
        for key in ("momentum", "nesterov", "betas"):
            default = DEFAULTS.get(name, {}).get(
                key, getattr(params.get(key), "default", inspect.Parameter.empty))
            value = out.get(key)
            if value is not None and default is not inspect.Parameter.empty and (
                    list(value) == list(default) if isinstance(value, (list, tuple)) else value == default):
                out[key] = None
        return out

    @model_validator(mode="after")
    def _options_apply(self) -> "OptimCfg":
        check_options(self.name, self.kwargs())
        return self

    def kwargs(self) -> dict[str, Any]:
        """The optimizer's keyword options (lr and the parameter groups apart)."""
        return optimizer_kwargs(self)
