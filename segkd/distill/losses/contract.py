"""A loss's contract: what it needs, declared on its class and checked when a run is built.

A loss class says, with class attributes (a plain ``nn.Module`` without them gets the defaults):

- ``needs_teacher`` (True): it reads a teacher tensor. False: the term's ``teacher`` is ignored
  (the term reads nothing from the teacher, which then does not run for it).
- ``needs_target`` (False): it reads the labels; a stage on unlabelled images refuses the term.
- ``inputs`` ("any"): where a term may read it -- ``"logits"`` (the models' outputs only),
  ``"features"`` (hooked module paths only) or ``"any"``.
- ``takes_lists`` (False): True: ``student``/``teacher`` are lists of positions (a single one
  becomes a list of one) and ``forward`` gets lists of tensors, in order; at least
  ``min_paths`` (1) per side, the teacher's as many as the student's. False: one position per
  side, a list is refused.
- ``wiring`` (()): option names that are module paths (wiring), not hyperparameters: they are
  taken out of the term's ``options`` before the loss is built; ``bind`` reads them there.
- ``bind(teacher, term)`` (optional method): teacher-side setup computed once per stage from
  the frozen teacher, e.g. OFD's margins from the teacher's BatchNorm (``term``: the resolved
  :class:`segkd.config.schema.Term`). The Distiller calls it for terms that read the teacher.

:meth:`Contract.resolve` is the one place a contract shapes a term (the teacher a loss does not
read is dropped, lists checked); the Distiller calls it when a stage starts. The Distiller and
the builders ask these; neither ever branches on a loss's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from torch import nn

from segkd.config.schema import LOGITS, Term
from segkd.core.errors import ConfigError
from segkd.core.registry import LOSSES

INPUTS = ("any", "logits", "features")


class Loss(nn.Module):
    """Base class of segkd's losses: the contract's defaults, written down once (see the module
    docstring). Subclassing it is optional; the attributes are what counts."""

    needs_teacher: ClassVar[bool] = True
    needs_target: ClassVar[bool] = False
    inputs: ClassVar[str] = "any"
    takes_lists: ClassVar[bool] = False
    min_paths: ClassVar[int] = 1
    wiring: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Contract:
    """The declared needs of one registered loss (defaults filled in, values checked)."""

    name: str
    needs_teacher: bool
    needs_target: bool
    inputs: str
    wiring: tuple[str, ...]
    takes_lists: bool = False
    min_paths: int = 1

    def split_options(self, options: Mapping[str, Any] | None) -> tuple[dict, dict]:
        """``options`` -> (hyperparameters for the constructor, wiring for ``bind``)."""
        opts = dict(options or {})
        return opts, {k: opts.pop(k) for k in self.wiring if k in opts}

    def resolve(self, term: Term) -> Term:
        """``term`` as this loss reads it: named (the loss's name when unnamed), without a
        teacher position when the loss reads no teacher (its ``teacher:`` is ignored), with
        lists of positions when the loss takes lists; checked (a ConfigError naming the term
        when its positions break the contract). The one place these rules live."""
        student, teacher = term.student, term.teacher if self.needs_teacher else None
        if self.takes_lists:
            student = _as_list(student)
            teacher = None if teacher is None else _as_list(teacher)
        out = term.model_copy(update={"name": term.name or self.name, "student": student,
                                      "teacher": teacher})
        self._check(out)
        return out

    def _check(self, t: Term) -> None:
        what = f"term '{t.name}' (loss '{self.name}')"
        if self.needs_teacher and t.teacher is None:
            raise ConfigError(f"{what} reads the teacher: set its `teacher:` (logits or a module path)")
        if not self.takes_lists and (isinstance(t.student, list) or isinstance(t.teacher, list)):
            raise ConfigError(f"{what} reads one tensor per side: give `student:` and `teacher:` "
                              "one path (or logits) each, not a list")
        if self.takes_lists:
            if len(t.student) < self.min_paths:
                raise ConfigError(f"{what} reads at least {self.min_paths} positions per side: "
                                  f"`student:` lists {len(t.student)}")
            if t.teacher is not None and len(t.teacher) != len(t.student):
                raise ConfigError(f"{what} pairs the student's positions with the teacher's in "
                                  f"order: `student:` lists {len(t.student)}, `teacher:` "
                                  f"{len(t.teacher)}; give as many of each")
        read = [p for side in ("student", "teacher") for p, _ in t.positions(side)]
        if self.inputs == "features" and LOGITS in read:
            raise ConfigError(f"{what} reads features: give module paths for `student:` and "
                              "`teacher:`, not logits")
        if self.inputs == "logits" and any(p != LOGITS for p in read):
            raise ConfigError(f"{what} reads logits only: set `student:` and `teacher:` to logits")


def _as_list(paths: str | list[str]) -> list[str]:
    return list(paths) if isinstance(paths, list) else [paths]


def contract_of(name: str, factory: Callable[..., Any] | None = None) -> Contract:
    """The contract of the loss registered as ``name`` (an unknown name lists the known ones)."""
    cls = factory if factory is not None else LOSSES.get(name)
    c = Contract(name=name, needs_teacher=bool(getattr(cls, "needs_teacher", True)),
                 needs_target=bool(getattr(cls, "needs_target", False)),
                 inputs=getattr(cls, "inputs", "any"), wiring=tuple(getattr(cls, "wiring", ())),
                 takes_lists=bool(getattr(cls, "takes_lists", False)),
                 min_paths=int(getattr(cls, "min_paths", 1)))
    if c.inputs not in INPUTS:
        raise ConfigError(f"loss '{name}' declares inputs={c.inputs!r}; expected one of {INPUTS}")
    return c
