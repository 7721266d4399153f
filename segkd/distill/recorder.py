"""Capture intermediate tensors by forward hooks on module-path strings.

No model code is edited to expose features (torchdistill's ForwardHookManager idea). A hook on
``"output"`` records what a module returns; on ``"input"`` it records the module's first input
(a forward *pre*-hook), which is how pre-activation features are taken: in timm ResNets the
block's final ReLU is its own module (``layerK.N.act2``), so its input is the pre-ReLU sum.
Inputs are cloned because that activation usually runs in place and would overwrite them.
"""
from __future__ import annotations

import difflib
from typing import Literal

import torch
import torch.nn as nn

from segkd.core.errors import ConfigError

HookKind = Literal["output", "input"]


def get_module(model: nn.Module, path: str, role: str = "model") -> nn.Module:
    """Return the submodule at dotted ``path``; unknown paths name the closest valid ones."""
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    close = difflib.get_close_matches(path, list(modules), n=5, cutoff=0.4)
    hint = f" Closest valid paths: {', '.join(close)}." if close else ""
    raise ConfigError(f"{role} has no module '{path}'.{hint} `segkd info` lists all module paths.")


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x:
        return _first_tensor(x[0])
    if isinstance(x, dict) and x:
        return _first_tensor(next(iter(x.values())))
    raise TypeError(f"cannot record a {type(x).__name__}")


class Recorder:
    """Records tensors at ``(path, kind)`` positions of one model during its forward.

    ``rec.add("encoder.model.layer2", "output")`` then ``model(x)`` fills ``rec.data``.
    ``rec.clear()`` empties it, ``rec.remove()`` removes every hook.
    """

    def __init__(self, model: nn.Module, role: str = "model") -> None:
        self.model = model
        self.role = role
        self.data: dict[tuple[str, str], torch.Tensor] = {}
        self._handles: dict[tuple[str, str], torch.utils.hooks.RemovableHandle] = {}

    def add(self, path: str, kind: HookKind = "output") -> tuple[str, str]:
        key = (path, kind)
        if key in self._handles:
            return key
        module = get_module(self.model, path, self.role)
        if kind == "output":
            def hook(_m, _inp, out, key=key):
                self.data[key] = _first_tensor(out)
            handle = module.register_forward_hook(hook)
        elif kind == "input":
            def pre_hook(_m, inp, key=key):
                self.data[key] = _first_tensor(inp).clone()
            handle = module.register_forward_pre_hook(pre_hook)
        else:
            raise ConfigError(f"hook kind must be 'output' or 'input', got '{kind}'")
        self._handles[key] = handle
        return key

    def get(self, key: tuple[str, str]) -> torch.Tensor:
        if key not in self.data:
            raise RuntimeError(f"{self.role} module '{key[0]}' did not run in this forward pass")
        return self.data[key]

    def clear(self) -> None:
        self.data.clear()

    def remove(self) -> None:
        for h in self._handles.values():
            h.remove()
        self._handles.clear()
        self.data.clear()

    def __del__(self) -> None:  # hooks never outlive the recorder
        try:
            self.remove()
        except (AttributeError, TypeError):  # interpreter shutdown: torch's globals already gone
            pass
