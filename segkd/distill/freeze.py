"""Which student parameters train in a stage, and BatchNorm that stays frozen with its part.

A parameter trains when its module path (or any ancestor's) matches a ``trainable`` glob and
none matches a ``frozen`` glob. A BatchNorm whose parameters are all frozen is kept in eval
mode, so its running statistics never move (kdsemseg's original let them drift).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _matches(name: str, globs: list[str]) -> bool:
    return any(fnmatchcase(p, g) for p in _prefixes(name) for g in globs)


def set_trainable(model: nn.Module, trainable: list[str], frozen: list[str] = ()) -> int:
    """Set ``requires_grad`` on every parameter; return the number of trainable tensors.

    A glob that matches no module is an error (it is almost always a typo).
    """
    names = [n for n, _ in model.named_modules() if n]
    for g in list(trainable) + list(frozen):
        if g != "*" and not any(fnmatchcase(n, g) for n in names):
            raise ConfigError(f"stage glob '{g}' matches no module of the student; "
                              "`segkd info` lists module paths")
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad_(_matches(name, list(trainable)) and not _matches(name, list(frozen)))
        count += int(p.requires_grad)
    return count


def frozen_batchnorms(model: nn.Module) -> list[nn.Module]:
    """BatchNorm modules all of whose parameters are frozen (or that have none and sit in a
    frozen parent)."""
    out = []
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                out.append(m)
    return out


def freeze_bn_stats(modules: list[nn.Module]) -> None:
    """Put the given BatchNorm modules in eval mode (running statistics stay fixed)."""
    for m in modules:
        m.eval()
