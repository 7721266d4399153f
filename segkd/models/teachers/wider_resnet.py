"""DeepWV3Plus: WiderResNet38 (A2) trunk + DeepLabV3+ decoder, laid out like NVIDIA's sdcnet code.

Written for segkd from the architecture description (Wu et al., "Wider or Deeper: Revisiting the
ResNet Model for Visual Recognition", 2016; Zhu et al., "Improving Semantic Segmentation via
Video Propagation and Label Relaxation", CVPR 2019) so that the published ``cityscapes_best.pth``
(19 classes, output stride 8) loads strictly once its ``module.`` prefix is removed. Module paths
are the original ones (``mod4.block2.convs.conv2``, ``aspp.features.1.0``, ``final.6``), so
Plug-and-Play cheap-conv plans naming them apply unchanged.

Facts the checkpoint does not say, fixed against the reference logits:

- Blocks are pre-activation: ``bn1`` = BN + ReLU on the block input; the projection shortcut
  (``proj_conv``, when stride or width changes) reads that *activated* input, the identity
  shortcut the raw input. Inside ``convs`` each ``bnN`` is BN + ReLU; no activation after the sum.
- Only ``mod4.block1`` strides (2); ``mod5`` has dilation 2, ``mod6``/``mod7`` dilation 4;
  ``pool2``/``pool3`` are 3x3/2 max-pools (padding 1). Trunk output stride 8, ``mod2`` at 2.
- ASPP (rates 12/24/36 at stride 8): the image-pooling branch (``img_conv`` = conv, BN, ReLU) is
  upsampled bilinear (align_corners=True) and concatenated *first*; no projection BN/ReLU:
  ``bot_aspp`` is a bare 1x1 conv, ``bot_fine`` a bare 1x1 conv on ``mod2``.
- All upsampling is bilinear with align_corners=True; ``final.6`` has no bias.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from segkd.core.errors import ConfigError
from segkd.core.registry import MODELS

# WiderResNet38: blocks per module mod2..mod7 and the channels of each block's convs.
WRN38_STRUCTURE = (3, 3, 6, 3, 1, 1)
WRN_CHANNELS: tuple[tuple[int, ...], ...] = (
    (128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096))
_DROPOUT = {4: 0.3, 5: 0.5}  # mod6 / mod7 (index into the structure) use Dropout2d


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True (NVIDIA mynn.Upsample)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def bn_relu(channels: int) -> nn.Sequential:
    """BN followed by ReLU, as one module (keys ``<name>.0.*``)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def _conv(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    pad = 0 if k == 1 else dilation * (k // 2)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False)


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block; ``channels`` of length 2 (basic) or 3 (bottleneck)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], stride: int = 1,
                 dilation: int = 1, dropout: float | None = None) -> None:
        super().__init__()
        self.bn1 = bn_relu(in_channels)
        if len(channels) == 2:
            layers = [("conv1", _conv(in_channels, channels[0], 3, stride, dilation)),
                      ("bn2", bn_relu(channels[0])),
                      ("conv2", _conv(channels[0], channels[1], 3, 1, dilation))]
        else:
            layers = [("conv1", _conv(in_channels, channels[0], 1, stride)),
                      ("bn2", bn_relu(channels[0])),
                      ("conv2", _conv(channels[0], channels[1], 3, 1, dilation)),
                      ("bn3", bn_relu(channels[1])),
                      ("conv3", _conv(channels[1], channels[2], 1))]
        if dropout is not None:  # before the last conv
            layers.insert(len(layers) - 1, ("dropout", nn.Dropout2d(dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        if stride != 1 or in_channels != channels[-1]:
            self.proj_conv = _conv(in_channels, channels[-1], 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.bn1(x)
        shortcut = self.proj_conv(act) if hasattr(self, "proj_conv") else x
        return self.convs(act) + shortcut


def _wrn_module(in_channels: int, mod_index: int, num_blocks: int) -> nn.Sequential:
    """mod{mod_index + 2} of the dilated WiderResNet-A2 (output stride 8)."""
    dilation = {3: 2, 4: 4, 5: 4}.get(mod_index, 1)
    blocks = []
    for b in range(num_blocks):
        stride = 2 if (b == 0 and mod_index == 2) else 1
        blocks.append((f"block{b + 1}", IdentityResidualBlock(
            in_channels, WRN_CHANNELS[mod_index], stride, dilation, _DROPOUT.get(mod_index))))
        in_channels = WRN_CHANNELS[mod_index][-1]
    return nn.Sequential(OrderedDict(blocks))


class ImagePoolASPP(nn.Module):
    """ASPP with image pooling first: output ``[N, 5 * 256, h, w]`` (no projection)."""

    def __init__(self, in_dim: int, reduction_dim: int = 256, rates: tuple[int, ...] = (12, 24, 36)):
        super().__init__()
        feats = [nn.Sequential(_conv(in_dim, reduction_dim, 1), nn.BatchNorm2d(reduction_dim),
                               nn.ReLU(inplace=True))]
        feats += [nn.Sequential(_conv(in_dim, reduction_dim, 3, dilation=r),
                                nn.BatchNorm2d(reduction_dim), nn.ReLU(inplace=True)) for r in rates]
        self.features = nn.ModuleList(feats)
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = nn.Sequential(_conv(in_dim, reduction_dim, 1),
                                      nn.BatchNorm2d(reduction_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _upsample(self.img_conv(self.img_pooling(x)), x.shape[2:])
        return torch.cat([pooled] + [f(x) for f in self.features], dim=1)


class DeepWV3Plus(nn.Module):
    """WiderResNet38 + DeepLabV3+; ``forward(x [N,3,H,W]) -> logits [N,C,H,W]`` (any mode)."""

    def __init__(self, num_classes: int = 19) -> None:
        super().__init__()
        self.mod1 = nn.Sequential(OrderedDict([("conv1", _conv(3, 64, 3))]))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, n in enumerate(WRN38_STRUCTURE):
            self.add_module(f"mod{i + 2}", _wrn_module(in_ch, i, n))
            in_ch = WRN_CHANNELS[i][-1]
        self.aspp = ImagePoolASPP(in_ch, 256, rates=(12, 24, 36))
        self.bot_fine = _conv(128, 48, 1)
        self.bot_aspp = _conv(1280, 256, 1)
        self.final = nn.Sequential(
            _conv(304, 256, 3), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            _conv(256, 256, 3), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            _conv(256, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        m2 = self.mod2(self.pool2(self.mod1(x)))  # stride 2, 128 channels
        deep = self.mod3(self.pool3(m2))
        for name in ("mod4", "mod5", "mod6", "mod7"):
            deep = getattr(self, name)(deep)
        up = _upsample(self.bot_aspp(self.aspp(deep)), m2.shape[2:])
        logits = self.final(torch.cat([self.bot_fine(m2), up], dim=1))
        return _upsample(logits, size)


@MODELS.register("deepwv3plus")
def build_deepwv3plus(num_classes: int = 19, output_stride: int = 8, **kw: Any) -> DeepWV3Plus:
    """NVIDIA DeepWV3Plus (WiderResNet38-A2, output stride 8)."""
    if kw:
        raise ConfigError(f"deepwv3plus: unexpected arguments {sorted(kw)}")
    if output_stride != 8:
        raise ConfigError(f"deepwv3plus: only output_stride 8 exists, got {output_stride}")
    return DeepWV3Plus(num_classes)
