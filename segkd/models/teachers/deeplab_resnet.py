"""DeepLabV3+ with a dilated ResNet backbone, laid out like jfzhang95/pytorch-deeplab-xception.

Written for segkd from the architecture description (Chen et al., "Encoder-Decoder with Atrous
Separable Convolution for Semantic Image Segmentation", ECCV 2018) so that the published
``deeplab-resnet.pth.tar`` (Pascal VOC, 21 classes, output stride 16) loads strictly: module
names match the checkpoint keys (``backbone.layer4.0.conv2``, ``aspp.aspp2.atrous_conv``,
``aspp.global_avg_pool.1``, ``decoder.last_conv.8``...).

Facts the checkpoint does not say, fixed against the reference logits:

- Bottleneck: stride on the 3x3 conv (``conv2``), ReLU after each BN and after the residual sum.
- layer4 is a multigrid unit: 3 blocks with dilation ``[1, 2, 4] * d`` (d = 2 at stride 16).
- ASPP branches are conv -> BN -> ReLU; the image-pooling branch is upsampled *bilinearly with
  align_corners=True* and concatenated *last*; projection 1x1 conv -> BN -> ReLU (-> dropout).
- Decoder: low-level 1x1 conv -> BN -> ReLU; ASPP output upsampled bilinear (align_corners=True)
  to stride 4; ``last_conv`` = conv3x3, BN, ReLU, Dropout, conv3x3, BN, ReLU, Dropout, conv1x1
  (with bias). The logits are upsampled bilinear (align_corners=True) to the input size.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkd.core.errors import ConfigError
from segkd.core.registry import MODELS

RESNET_LAYERS: dict[str, list[int]] = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}
# output_stride -> (strides of layer1..4, dilation of layer1..4, ASPP rates)
_STRIDE_PLAN: dict[int, tuple[list[int], list[int], list[int]]] = {
    16: ([1, 2, 2, 1], [1, 1, 1, 2], [1, 6, 12, 18]),
    8: ([1, 2, 1, 1], [1, 1, 2, 4], [1, 12, 24, 36]),
}
_MULTI_GRID = (1, 2, 4)


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True (as the original code does everywhere)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _conv(cin: int, cout: int, k: int = 1, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """Conv without bias, 'same' padding for odd kernels (dilation aware)."""
    pad = 0 if k == 1 else dilation * (k // 2)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3), ``planes * 4`` output channels."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride=stride, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """Dilated ResNet returning ``(features [N,2048,H/os,W/os], low_level [N,256,H/4,W/4])``."""

    def __init__(self, layers: list[int], output_stride: int = 16) -> None:
        super().__init__()
        strides, dilations, _ = _STRIDE_PLAN[output_stride]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, [dilations[0]] * layers[0], strides[0])
        self.layer2 = self._make_layer(128, [dilations[1]] * layers[1], strides[1])
        self.layer3 = self._make_layer(256, [dilations[2]] * layers[2], strides[2])
        # multigrid unit: the block count is fixed by the grid, not by ``layers[3]``
        self.layer4 = self._make_layer(512, [g * dilations[3] for g in _MULTI_GRID], strides[3])

    def _make_layer(self, planes: int, block_dilations: list[int], stride: int) -> nn.Sequential:
        """Blocks with the given dilations; the first one strides and may project."""
        out_ch = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out_ch:
            downsample = nn.Sequential(_conv(self.inplanes, out_ch, 1, stride=stride),
                                       nn.BatchNorm2d(out_ch))
        blocks = [Bottleneck(self.inplanes, planes, stride, block_dilations[0], downsample)]
        self.inplanes = out_ch
        blocks += [Bottleneck(out_ch, planes, 1, d) for d in block_dilations[1:]]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        x = self.layer4(self.layer3(self.layer2(low_level)))
        return x, low_level


class ASPPBranch(nn.Module):
    """One atrous branch: conv (1x1 or dilated 3x3) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.atrous_conv = _conv(cin, cout, kernel_size, dilation=dilation)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Four atrous branches + image pooling, concatenated (pooling last), projected to 256."""

    def __init__(self, cin: int, rates: list[int], cout: int = 256) -> None:
        super().__init__()
        self.aspp1 = ASPPBranch(cin, cout, 1, rates[0])
        self.aspp2 = ASPPBranch(cin, cout, 3, rates[1])
        self.aspp3 = ASPPBranch(cin, cout, 3, rates[2])
        self.aspp4 = ASPPBranch(cin, cout, 3, rates[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), _conv(cin, cout, 1),
                                             nn.BatchNorm2d(cout), nn.ReLU())
        self.conv1 = _conv(5 * cout, cout, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _upsample(self.global_avg_pool(x), x.shape[2:])
        branches = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled]
        out = self.relu(self.bn1(self.conv1(torch.cat(branches, dim=1))))
        return self.dropout(out)


class Decoder(nn.Module):
    """DeepLabV3+ decoder: fuse ASPP output with 48-channel low-level features at stride 4."""

    def __init__(self, num_classes: int, low_level_channels: int = 256) -> None:
        super().__init__()
        self.conv1 = _conv(low_level_channels, 48, 1)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu = nn.ReLU()
        self.last_conv = nn.Sequential(
            _conv(304, 256, 3), nn.BatchNorm2d(256), nn.ReLU(), nn.Dropout(0.5),
            _conv(256, 256, 3), nn.BatchNorm2d(256), nn.ReLU(), nn.Dropout(0.1),
            nn.Conv2d(256, num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low = self.relu(self.bn1(self.conv1(low_level)))
        x = _upsample(x, low.shape[2:])
        return self.last_conv(torch.cat([x, low], dim=1))


class DeepLabV3PlusResNet(nn.Module):
    """DeepLabV3+ (ResNet backbone); ``forward(x [N,3,H,W]) -> logits [N,C,H,W]``."""

    def __init__(self, num_classes: int = 21, backbone: str = "resnet101",
                 output_stride: int = 16) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(RESNET_LAYERS[backbone], output_stride)
        self.aspp = ASPP(2048, _STRIDE_PLAN[output_stride][2])
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, low_level = self.backbone(x)
        logits = self.decoder(self.aspp(feats), low_level)
        return _upsample(logits, x.shape[2:])


@MODELS.register("jfzhang95_deeplabv3plus")
def build_jfzhang95_deeplabv3plus(num_classes: int = 21, backbone: str = "resnet101",
                                  output_stride: int = 16, **kw: Any) -> DeepLabV3PlusResNet:
    """DeepLabV3+ as in jfzhang95/pytorch-deeplab-xception (ResNet backbones only)."""
    if kw:
        raise ConfigError(f"jfzhang95_deeplabv3plus: unexpected arguments {sorted(kw)}")
    if backbone not in RESNET_LAYERS:
        raise ConfigError(f"jfzhang95_deeplabv3plus: backbone '{backbone}' not supported; "
                          f"use one of {sorted(RESNET_LAYERS)}")
    if output_stride not in _STRIDE_PLAN:
        raise ConfigError(f"jfzhang95_deeplabv3plus: output_stride must be 8 or 16, "
                          f"got {output_stride}")
    return DeepLabV3PlusResNet(num_classes, backbone, output_stride)
