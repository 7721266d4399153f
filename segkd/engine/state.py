"""Assembling and restoring run state (what a checkpoint holds)."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import numpy as np
import torch

from segkd.core.checkpoint import model_checkpoint  # noqa: F401  (the engine's name for it)


@dataclass
class Progress:
    """The run's counters: where it stands (stage, epoch), what it has done (optimiser steps,
    images, training seconds), the current stage's best selection value and how many stages'
    replacements are installed. Saved in every ``last.pt`` as the dict :meth:`to_dict` writes
    (its keys are the checkpoint format: a resume reads them back with :meth:`from_dict`)."""

    stage: int = 0
    epoch: int = 0
    step: int = 0
    best: Optional[float] = None
    best_epoch: Optional[int] = None
    replaced_upto: int = 0
    images: int = 0
    train_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint form (``ckpt["progress"]``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Progress":
        """Read the checkpoint form; a key an older checkpoint lacks keeps its default."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass
class StageRun:
    """What one stage trains with, built once per stage: the (Fabric-wrapped) Distiller, its
    optimiser, the learning-rate schedule and when it steps (``"iter"``, ``"epoch"``,
    ``"plateau"``), the loaders, iterations per epoch and the stage's teacher cache, if any."""

    module: torch.nn.Module
    opt: torch.optim.Optimizer
    loader: Any
    iters: int
    sched: Any = None
    when: str = "iter"
    val_loader: Any = None
    teacher_cache: Any = None
    select_loader: Any = None  # the held-out selection split (data.select_fraction), if any


def rng_state() -> dict[str, Any]:
    st = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(), "python": list(py[1]), "python_gauss": py[2],
            "numpy": torch.from_numpy(st[1].astype(np.int64)), "numpy_pos": int(st[2])}


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
