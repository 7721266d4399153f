"""A loss's contract: what it needs, declared on its class and checked when a run is built.

A loss class says, with class attributes (a plain ``nn.Module`` without them gets the defaults):

- ``needs_teacher`` (True): it reads a teacher tensor. False: the term's ``teacher`` is ignored
  (the term reads nothing from the teacher, which then does not run for it).
- ``needs_target`` (False): it reads the labels; a stage on unlabelled images refuses the term.
- ``inputs`` ("any"): where a term may read it -- ``"logits"`` (the models' outputs only),
  ``"features"`` (hooked module paths only) or ``"any"``.
- ``wiring`` (()): option names that are module paths (wiring), not hyperparameters: they are
  taken out of the term's ``options`` before the loss is built and handed to ``bind``.
- ``bind(teacher, paths)`` (optional method): teacher-side setup computed once per stage from
  the frozen teacher, e.g. OFD's margins from the teacher's BatchNorm (``paths``: a
  :class:`TermPaths`). The Distiller calls it for terms that read the teacher.

The Distiller and the builders ask these; neither ever branches on a loss's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

from segkd.errors import ConfigError
from segkd.registry import LOSSES

INPUTS = ("any", "logits", "features")


@dataclass(frozen=True)
class TermPaths:
    """Where a term reads its tensors, given to ``bind``: module paths (or ``"logits"``), hook
    kinds (``"output"`` / ``"input"``) and the loss's declared ``wiring`` options."""

    student: str
    teacher: str | None
    student_hook: str = "output"
    teacher_hook: str = "output"
    wiring: Mapping[str, Any] = field(default_factory=dict)


class Loss(nn.Module):
    """Base class of segkd's losses: the contract's defaults, written down once (see the module
    docstring). Subclassing it is optional; the attributes are what counts."""

    needs_teacher: ClassVar[bool] = True
    needs_target: ClassVar[bool] = False
    inputs: ClassVar[str] = "any"
    wiring: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Contract:
    """The declared needs of one registered loss (defaults filled in, values checked)."""

    name: str
    needs_teacher: bool
    needs_target: bool
    inputs: str
    wiring: tuple[str, ...]

    def split_options(self, options: Mapping[str, Any] | None) -> tuple[dict, dict]:
        """``options`` -> (hyperparameters for the constructor, wiring for ``bind``)."""
        opts = dict(options or {})
        return opts, {k: opts.pop(k) for k in self.wiring if k in opts}

    def check_term(self, term: str, student: str, teacher: str | None, logits: str) -> None:
        """Raise a ConfigError naming ``term`` when its positions break the contract."""
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"term '{term}' (loss '{self.name}') reads the teacher: set its "
                              "`teacher:` (logits or a module path)")
        read = [student] + ([teacher] if teacher is not None else [])
        if self.inputs == "features" and logits in read:
            raise ConfigError(f"term '{term}' (loss '{self.name}') reads features: give module "
                              "paths for `student:` and `teacher:`, not logits")
        if self.inputs == "logits" and any(p != logits for p in read):
            raise ConfigError(f"term '{term}' (loss '{self.name}') reads logits only: set "
                              "`student:` and `teacher:` to logits")


def contract_of(name: str, factory: Callable[..., Any] | None = None) -> Contract:
    """The contract of the loss registered as ``name`` (an unknown name lists the known ones)."""
    cls = factory if factory is not None else LOSSES.get(name)
    c = Contract(name=name, needs_teacher=bool(getattr(cls, "needs_teacher", True)),
                 needs_target=bool(getattr(cls, "needs_target", False)),
                 inputs=getattr(cls, "inputs", "any"), wiring=tuple(getattr(cls, "wiring", ())))
    if c.inputs not in INPUTS:
        raise ConfigError(f"loss '{name}' declares inputs={c.inputs!r}; expected one of {INPUTS}")
    return c
