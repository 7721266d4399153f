"""A student's initial weights taken from another model (``model.init_from``).

``init_match: strict`` (the default) loads a checkpoint of exactly the student's architecture.
``init_match: shared`` copies every tensor whose name and shape both models have and keeps the
student's own initialisation for the rest: e.g. a UNet-ResNet18 student initialised from a
UNet-ResNet34 teacher gets the teacher's stem, decoder, head and the first two blocks of each
encoder stage (the first-k-layers initialisation of DistilBERT, Sanh et al. 2019, for CNN
stages). ``init_from: teacher`` names the run's own teacher.
``init_match: {blocks: {...}, channels: bn}`` takes every tensor from the source cut to the
student's blocks per stage (the mapping says which source block each student block starts from)
and narrowed to its channels (the source's most important ones, chosen once per residual chain):
see segkd.models.narrow, and ``segkd compress``, which writes such mappings.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from segkd.core.checkpoint import load_strict
from segkd.core.errors import ConfigError
from segkd.models.narrow import block_spec, derive_state, describe_blocks
from segkd.models.spec import model_from_checkpoint


def shared_tensors(student: nn.Module, state: dict) -> tuple[dict, int, int]:
    """(the entries of ``state`` matching the student by name and shape, parameters covered,
    student parameters in all)."""
    own = student.state_dict()
    hit = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    params = dict(student.named_parameters())
    covered = sum(p.numel() for k, p in params.items() if k in hit)
    return hit, covered, sum(p.numel() for p in params.values())


def derived_init(student: nn.Module, state: dict, source: str, mapping: Any) -> str:
    """Load the student from ``state`` cut/narrowed by ``mapping`` (an InitMapCfg or a dict
    with ``blocks`` and ``channels``); returns the account of what was loaded."""
    get = mapping.get if isinstance(mapping, dict) else lambda k, d=None: getattr(mapping, k, d)
    blocks, channels = block_spec(get("blocks", {}) or {}), get("channels", "bn")
    new, narrowed = derive_state(state, student.state_dict(), blocks, channels)
    with torch.no_grad():
        student.load_state_dict(new, strict=True)
    how = f"blocks {describe_blocks(blocks)}" if blocks else "every block"
    chans = (f"; channels narrowed in {len(narrowed)} groups, kept by "
             f"{'BatchNorm |gamma|' if channels == 'bn' else 'filter L1 norm'}" if narrowed else "")
    return f"student initialised from {source} cut and narrowed: {how}{chans} (all tensors)"


def initialise_student(student: nn.Module, init_from: str, match: Any,
                       teacher: Optional[nn.Module]) -> str:
    """Load the initial weights into ``student``; returns a one-line account of what was loaded."""
    if init_from == "teacher":
        if teacher is None:
            raise ConfigError("model.init_from: teacher needs a `teacher:` section")
        state, source = teacher.state_dict(), "the teacher"
    else:
        state, source = model_from_checkpoint(init_from)[0].state_dict(), init_from
    if not isinstance(match, str):
        return derived_init(student, state, source, match)
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
