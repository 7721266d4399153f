"""Measurement utilities: parameter / FLOP counts and latency."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from segkd.models.cost import (
    count_flops,
    count_params,
    measure_latency,
    module_input_shapes,
    per_module_flops,
    per_module_params,
)


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1, groups=2, bias=False))


def test_count_params_trainable_only() -> None:
    net = _net()
    total = 3 * 8 * 9 + 8 + 16 + 8 * 16 * 9 // 2
    assert count_params(net) == total
    net[0].requires_grad_(False)
    assert count_params(net, trainable_only=True) == total - (3 * 8 * 9 + 8)
    assert per_module_params(net, ["0", "3"]) == {"0": 3 * 8 * 9 + 8, "3": 8 * 16 * 9 // 2}


@pytest.mark.parametrize("cin,cout,k,stride,groups", [(3, 8, 3, 1, 1), (8, 16, (3, 5), 2, 4),
                                                       (16, 16, 7, 3, 16)])
def test_count_flops_single_conv_formula(cin: int, cout: int, k, stride: int, groups: int) -> None:
    conv = nn.Conv2d(cin, cout, k, stride=stride, groups=groups, bias=True)
    h, w = 33, 21
    out = conv(torch.zeros(1, cin, h, w))
    kh, kw = conv.kernel_size
    macs = out.numel() * (cin // groups) * kh * kw
    assert count_flops(conv, (h, w), in_chans=cin) == 2 * macs  # FLOPs = 2 x MACs


def test_count_flops_linear_and_transpose() -> None:
    net = nn.Sequential(nn.ConvTranspose2d(4, 6, 2, stride=2), nn.Flatten(), nn.Linear(6 * 10 * 10, 7))
    expected = 2 * (4 * 5 * 5 * 6 * 2 * 2) + 2 * (600 * 7)
    assert count_flops(net, (5, 5), in_chans=4) == expected


def test_measurement_keeps_training_flags_and_stats() -> None:
    net = _net().train()
    net[1].eval()
    stats = net[1].running_mean.clone()
    count_flops(net, (8, 8))
    assert net.training and not net[1].training
    assert torch.equal(net[1].running_mean, stats)


def test_module_input_shapes_and_flops() -> None:
    net = _net()
    assert module_input_shapes(net, ["0", "3"], (10, 12)) == {"0": [(1, 3, 10, 12)],
                                                              "3": [(1, 8, 5, 6)]}
    assert per_module_flops(net, ["3"], (10, 12)) == {"3": 2 * 16 * 5 * 6 * 4 * 9}
    assert not net[3]._forward_pre_hooks


def test_measure_latency_positive() -> None:
    res = measure_latency(_net(), (16, 16), warmup=1, iters=3)
    assert set(res) == {"mean_ms", "std_ms", "p50_ms"}
    assert res["mean_ms"] > 0 and res["p50_ms"] > 0 and res["std_ms"] >= 0


def test_measure_latency_other_dtype_leaves_model() -> None:
    net = _net()
    res = measure_latency(net, (16, 16), warmup=0, iters=2, dtype=torch.float64, channels_last=True)
    assert res["mean_ms"] > 0
    assert net[0].weight.dtype == torch.float32
    assert net[0].weight.is_contiguous()
