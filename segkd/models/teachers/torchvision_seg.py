"""torchvision segmentation models as teachers: same modules and state-dict keys as torchvision,
but ``forward`` returns the ``"out"`` logits tensor ``[N, C, H, W]`` instead of a dict.

Weights follow torchvision's own API: ``weights=`` (enum, its name such as
``"COCO_WITH_VOC_LABELS_V1"``, or None) and ``weights_backbone=``. Both default to None here
(torchvision's backbone default would download ImageNet weights). Nothing is downloaded unless
weights are asked for.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
from torchvision.models import segmentation as tvseg

from segkd.core.errors import ConfigError
from segkd.core.registry import MODELS


class _OutOnly:
    """Mixin: return the ``"out"`` entry of torchvision's output dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)["out"]  # type: ignore[misc]


class DeepLabV3Out(_OutOnly, tvseg.DeepLabV3):
    """torchvision DeepLabV3 whose forward returns the logits tensor."""


class FCNOut(_OutOnly, tvseg.FCN):
    """torchvision FCN whose forward returns the logits tensor."""


class LRASPPOut(_OutOnly, tvseg.LRASPP):
    """torchvision LRASPP whose forward returns the logits tensor."""


_OUT_CLASS: dict[type, type] = {tvseg.DeepLabV3: DeepLabV3Out, tvseg.FCN: FCNOut,
                                tvseg.LRASPP: LRASPPOut}


def logits_only(net: nn.Module) -> nn.Module:
    """Re-class a torchvision segmentation model in place so ``forward`` returns ``out``.

    Modules, parameters and state-dict keys are untouched (torchvision checkpoints still load).
    """
    net.__class__ = _OUT_CLASS[type(net)]
    return net


def _builder(name: str, fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def build(num_classes: int = 21, weights: Any = None, weights_backbone: Any = None,
              output_stride: int | None = None, **kw: Any) -> nn.Module:
        if output_stride not in (None, 8 if "lraspp" not in name else 16):
            raise ConfigError(f"{name}: output_stride is fixed by torchvision, got {output_stride}")
        try:
            net = fn(weights=weights, weights_backbone=weights_backbone,
                     num_classes=num_classes, **kw)
        except (ValueError, TypeError, KeyError) as err:  # bad weights name / class count
            raise ConfigError(f"{name}: {err}") from err
        return logits_only(net)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"torchvision ``{fn.__name__}`` returning logits only (no download by default)."
    return build


_TORCHVISION = {
    "tv_deeplabv3_resnet50": tvseg.deeplabv3_resnet50,
    "tv_deeplabv3_resnet101": tvseg.deeplabv3_resnet101,
    "tv_fcn_resnet50": tvseg.fcn_resnet50,
    "tv_fcn_resnet101": tvseg.fcn_resnet101,
    "tv_lraspp_mobilenet_v3_large": tvseg.lraspp_mobilenet_v3_large,
}
for _name, _fn in _TORCHVISION.items():
    MODELS.register(_name, _builder(_name, _fn))
