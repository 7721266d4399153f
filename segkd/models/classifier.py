"""timm classifiers as 1x1 "segmentation" networks (see segkd.data.classification)."""
from __future__ import annotations

import torch
import torch.nn as nn

from segkd.core.registry import MODELS


class ClassifierAsSeg(nn.Module):
    """Wraps a timm classifier: ``forward(x) -> [N, C, 1, 1]``. Module paths are ``model.<...>``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, :, None, None]


@MODELS.register("classifier")
def classifier(encoder: str = "resnet18", num_classes: int = 1000, pretrained: bool = False,
               **kwargs) -> nn.Module:
    """Any timm classifier (``encoder`` is its timm name) with ``num_classes`` outputs."""
    import timm

    from segkd.models import encoders  # noqa: F401  (kd_resnet* are timm names too)

    return ClassifierAsSeg(timm.create_model(encoder, pretrained=pretrained, num_classes=num_classes, **kwargs))
