"""The OFD study's students: jfzhang95-style DeepLabV3+ (full 3x3 ASPP, 48-channel low-level
projection, two 3x3 decoder convs) over a timm backbone (ResNet18, MobileNetV2, ...).

Same head as the imported ResNet101 teacher (``jfzhang95_deeplabv3plus``), so the seed's
parameter counts hold (ResNet18 ~16.6M, MobileNetV2 ~5.8M with 21 classes) and feature positions
(``aspp``, ``decoder.last_conv.*``) have the same names in teacher and student.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkd.core.registry import MODELS
from segkd.models.teachers.deeplab_resnet import ASPP, Decoder

_RATES = {16: [1, 6, 12, 18], 8: [1, 12, 24, 36]}


class DeepLabV3PlusTimm(nn.Module):
    """``forward(x [N,3,H,W]) -> logits [N,C,H,W]``; the backbone is ``backbone.<timm paths>``."""

    def __init__(self, encoder: str, num_classes: int, output_stride: int = 16,
                 pretrained: bool = False) -> None:
        super().__init__()
        import timm

        from segkd.models import encoders  # noqa: F401  (kd_resnet* names)

        self.backbone = timm.create_model(encoder, features_only=True, pretrained=pretrained,
                                          output_stride=output_stride, out_indices=(1, 4))
        low_ch, high_ch = self.backbone.feature_info.channels()
        self.aspp = ASPP(high_ch, _RATES[output_stride])
        self.decoder = Decoder(num_classes, low_level_channels=low_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        logits = self.decoder(self.aspp(high), low)
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


@MODELS.register("deeplabv3plus_ofd")
def deeplabv3plus_ofd(encoder: str = "resnet18", num_classes: int = 21, output_stride: int = 16,
                      pretrained: bool = False) -> DeepLabV3PlusTimm:
    """jfzhang95-style DeepLabV3+ head over a timm ``encoder`` (the OFD study's students)."""
    return DeepLabV3PlusTimm(encoder, num_classes, output_stride, pretrained)
