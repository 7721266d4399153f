"""A student's initial weights taken from another model (``model.init_from``).

``init_match: strict`` (the default) loads a checkpoint of exactly the student's architecture.
``init_match: shared`` copies every tensor whose name and shape both models have and keeps the
student's own initialisation for the rest: e.g. a UNet-ResNet18 student initialised from a
UNet-ResNet34 teacher gets the teacher's stem, decoder, head and the first two blocks of each
encoder stage (the first-k-layers initialisation of DistilBERT, Sanh et al. 2019, for CNN
stages). ``init_from: teacher`` names the run's own teacher.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..checkpoint import load_strict
from ..errors import ConfigError
from ..models.spec import model_from_checkpoint


def shared_tensors(student: nn.Module, state: dict) -> tuple[dict, int, int]:
    """(the entries of ``state`` matching the student by name and shape, parameters covered,
    student parameters in all)."""
    own = student.state_dict()
    hit = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    params = dict(student.named_parameters())
    covered = sum(p.numel() for k, p in params.items() if k in hit)
    return hit, covered, sum(p.numel() for p in params.values())


def initialise_student(student: nn.Module, init_from: str, match: str,
                       teacher: Optional[nn.Module]) -> str:
    """Load the initial weights into ``student``; returns a one-line account of what was loaded."""
    if init_from == "teacher":
        if teacher is None:
            raise ConfigError("model.init_from: teacher needs a `teacher:` section")
        state, source = teacher.state_dict(), "the teacher"
    else:
        state, source = model_from_checkpoint(init_from)[0].state_dict(), init_from
    if match == "strict":
        load_strict(student, state, source)
        return f"student initialised from {source} (all tensors)"
    hit, covered, total = shared_tensors(student, state)
    if not covered:
        raise ConfigError(f"model.init_from: no parameter of the student has a tensor of the same name "
                          f"and shape in {source}; nothing to initialise from")
    with torch.no_grad():
        student.load_state_dict({k: v.detach().clone() for k, v in hit.items()}, strict=False)
    return (f"student initialised from {source}: {len(hit)} tensors with the same name and shape "
            f"({100 * covered / total:.1f}% of its parameters); the rest keep their own initialisation")
