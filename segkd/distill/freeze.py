"""Which student parameters train in a stage, and BatchNorm that stays frozen with its part.

A parameter trains when its module path (or any ancestor's) matches a ``trainable`` glob and
none matches a ``frozen`` glob. A module none of whose parameters train is kept in eval mode
with everything inside it (BatchNorm running statistics never move, Dropout is off), so a frozen
part computes exactly what the eval-mode teacher it was copied from computes (kdsemseg's original
let BatchNorm statistics drift; Plug and Play's frozen DeepWV3Plus parts ran Dropout2d).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

import torch.nn as nn

from segkd.core.errors import ConfigError


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


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """The largest modules that have parameters and none that trains (``model`` itself when
    nothing in it trains). Putting them in eval mode also covers the modules without parameters
    inside them (Dropout, BatchNorm without affine, pooling): those sit in a frozen part. A
    parameterless module whose enclosing module still trains keeps the training mode."""
    out: list[nn.Module] = []
    inside: str | None = None  # path of the last module taken; its descendants are covered
    for name, m in model.named_modules():
        if inside is not None and (inside == "" or name.startswith(inside + ".")):
            continue
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            out.append(m)
            inside = name
    return out


def keep_in_eval(modules: list[nn.Module]) -> None:
    """Put the given modules (and everything inside them) in eval mode."""
    for m in modules:
        m.eval()
