"""Inference modes: whole image (padded to the stride), sliding window, flip and multi-scale.

All modes average *logits* (softmax-free), like the Plug-and-Play seed's test protocol.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class InferenceSpec:
    stride: int = 32  # inputs are padded to a multiple of this
    sliding_crop: tuple[int, int] | None = None  # (H, W)
    overlap: float = 1 / 3
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])


def _pad_to(x: torch.Tensor, mult: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % mult, (-w) % mult
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


def whole(model: Model, x: torch.Tensor, stride: int) -> torch.Tensor:
    """Logits for the whole image, padded (bottom/right) to ``stride`` and cropped back."""
    xp, (h, w) = _pad_to(x, stride)
    return _crop(model(xp), h, w, xp)


def _crop(y: torch.Tensor, h: int, w: int, xp: torch.Tensor) -> torch.Tensor:
    if y.shape[-2:] != xp.shape[-2:]:  # a model returning lower-resolution logits
        y = F.interpolate(y, size=xp.shape[-2:], mode="bilinear", align_corners=False)
    return y[..., :h, :w]


def sliding(model: Model, x: torch.Tensor, crop: tuple[int, int], overlap: float,
            stride: int) -> torch.Tensor:
    """Average logits over crops of size ``crop`` moved with ``overlap`` (e.g. 1/3)."""
    n, _, h, w = x.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    sh, sw = max(1, int(ch * (1 - overlap))), max(1, int(cw * (1 - overlap)))
    rows = max(1, math.ceil((h - ch) / sh) + 1)
    cols = max(1, math.ceil((w - cw) / sw) + 1)
    out, count = None, x.new_zeros((1, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, h - ch), min(c * sw, w - cw)
            logits = whole(model, x[:, :, y0:y0 + ch, x0:x0 + cw], stride)
            if out is None:
                out = x.new_zeros((n, logits.shape[1], h, w), dtype=logits.dtype)
            out[:, :, y0:y0 + ch, x0:x0 + cw] += logits
            count[:, :, y0:y0 + ch, x0:x0 + cw] += 1
    return out / count


@torch.no_grad()
def predict_logits(model: Model, x: torch.Tensor, spec: InferenceSpec,
                   out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Logits ``[N, C, H, W]`` at ``out_size`` (default: the input size) under ``spec``."""
    h, w = x.shape[-2:]
    out_size = out_size or (h, w)
    total = None
    for s in spec.scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for flip in ([False, True] if spec.flip else [False]):
            xi = xs.flip(-1) if flip else xs
            if spec.sliding_crop:
                y = sliding(model, xi, spec.sliding_crop, spec.overlap, spec.stride)
            else:
                y = whole(model, xi, spec.stride)
            y = y.flip(-1) if flip else y
            y = F.interpolate(y.float(), size=out_size, mode="bilinear", align_corners=False)
            total = y if total is None else total + y
    return total / (len(spec.scales) * (2 if spec.flip else 1))
