"""segkd: knowledge distillation for semantic segmentation.

    model, meta = segkd.load_model("runs/x/best.pt")   # or a run directory
    logits = model(images)                             # [N, num_classes, H, W]
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os

    import torch.nn as nn

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """The model of a segkd checkpoint (a ``.pt`` file, or a run directory: its best.pt, else
    last.pt) in eval mode, and its meta (``classes``, ``num_classes``, ``mean``, ``std``,
    ``ignore_index``). The file's sha256 is verified and nothing in it is executed; the model
    returns the logits tensor. See :func:`segkd.models.spec.load_model`."""
    from segkd.models.spec import load_model as _load  # torch, timm, smp: imported on first use

    return _load(path)
