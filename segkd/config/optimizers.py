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
from typing import Any

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
