"""Assembling and restoring run state (what a checkpoint holds)."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..checkpoint import FORMAT


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


def model_checkpoint(student: torch.nn.Module, spec: dict, replacements: list, meta: dict,
                     config: dict, extra: dict | None = None) -> dict[str, Any]:
    """A model-only checkpoint (best.pt, exports, teacher references)."""
    return {"format": FORMAT, "version": 1, "kind": "model", "model": spec,
            "replacements": replacements, "state_dict": _cpu_state(student), "meta": meta,
            "config": config, **(extra or {})}


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}
