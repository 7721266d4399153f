"""Connectors map a student feature to the teacher's channel count before a feature loss."""
from __future__ import annotations

import torch.nn as nn

from segkd.core.registry import CONNECTORS


@CONNECTORS.register("conv1x1_bn")
def conv1x1_bn(in_channels: int, out_channels: int) -> nn.Module:
    """1x1 conv (no bias) + BatchNorm, as in FitNets/OFD. Shape [N,Cs,H,W] -> [N,Ct,H,W]."""
    conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


@CONNECTORS.register("conv1x1")
def conv1x1(in_channels: int, out_channels: int) -> nn.Module:
    """A plain 1x1 conv with bias."""
    return nn.Conv2d(in_channels, out_channels, 1)


@CONNECTORS.register("conv3x3_bn_relu")
def conv3x3_bn_relu(in_channels: int, out_channels: int) -> nn.Module:
    """3x3 conv + BN + ReLU then 1x1 conv: a stronger adapter for large channel gaps."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
    )


@CONNECTORS.register("identity")
def identity(in_channels: int, out_channels: int) -> nn.Module:
    if in_channels != out_channels:
        raise ValueError(f"identity connector needs equal channels, got {in_channels} -> {out_channels}")
    return nn.Identity()
