"""Cheap convolution replacement: shapes, paths, parameter counts, planning."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from segkd.models.cheap import (
    CHEAP_BLOCKS,
    CheapBlock,
    auto_plan,
    build_block,
    make_cheap_student,
    replace_convs,
    replacement_table,
    resolve_paths,
)
from segkd.models.cost import count_flops, count_params

# (in, out, kernel, stride, padding, dilation, groups, bias, padding_mode)
CONVS = [
    (8, 16, 3, 1, 1, 1, 1, True, "zeros"),
    (8, 16, 3, 2, 1, 1, 1, False, "zeros"),
    (16, 8, 3, 1, 2, 2, 1, True, "zeros"),
    (16, 16, 3, 2, 4, 4, 4, True, "zeros"),
    (8, 16, (1, 7), 1, (0, 3), 1, 2, False, "zeros"),
    (8, 8, (3, 5), (2, 1), (1, 2), (1, 2), 1, True, "zeros"),
    (8, 16, 3, 1, 0, 1, 1, True, "zeros"),          # valid conv: output shrinks
    (8, 16, 4, 2, 1, 1, 1, False, "zeros"),          # even kernel: asymmetric padding
    (8, 16, 2, 1, 0, 1, 1, True, "zeros"),
    (8, 16, 5, 1, "same", 1, 1, True, "zeros"),
    (8, 16, 4, 1, "same", 2, 1, True, "zeros"),
    (8, 8, 3, 1, "valid", 3, 8, False, "zeros"),     # depthwise original
    (8, 16, 3, 1, 1, 1, 1, True, "reflect"),
    (12, 18, 3, 3, 1, 1, 3, True, "zeros"),
    (8, 16, 1, 2, 0, 1, 1, True, "zeros"),           # 1x1 strided (not for dwsep)
]
SIZES = [(17, 23), (32, 32), (41, 9)]
BLOCKS = [("dwsep", {}), ("dwsep", {"kernel_size": 3, "dilation": 1}),
          ("dwsep", {"kernel_size": 4, "dilation": 3}), ("lowrank", {}), ("grouped", {})]


def _conv(spec: tuple) -> nn.Conv2d:
    cin, cout, k, s, p, d, g, b, mode = spec
    return nn.Conv2d(cin, cout, k, s, p, d, groups=g, bias=b, padding_mode=mode)


def _valid(spec: tuple, block: str) -> bool:
    """dwsep refuses 1x1 convs (tested separately): those combinations are not cases at all."""
    k = spec[2] if isinstance(spec[2], tuple) else (spec[2], spec[2])
    return not (block == "dwsep" and k == (1, 1))


SHAPE_CASES = [pytest.param(spec, block, opts, id=f"{block}{opts or ''}-{spec}")
               for block, opts in BLOCKS for spec in CONVS if _valid(spec, block)]


@pytest.mark.parametrize("spec,block,opts", SHAPE_CASES)
def test_block_preserves_output_shape(spec: tuple, block: str, opts: dict) -> None:
    conv = _conv(spec)
    new, _ = build_block(conv, block, **opts)
    assert isinstance(new, CheapBlock)
    for h, w in SIZES:
        x = torch.randn(2, conv.in_channels, h, w)
        assert new(x).shape == conv(x).shape, (h, w)


def test_registry_names() -> None:
    assert CHEAP_BLOCKS.names() == ["dwsep", "grouped", "lowrank"]


def test_dwsep_exact_param_formula_and_savings() -> None:
    for cin, cout, groups, bias in itertools.product([16, 256], [32, 256], [1, 4], [False, True]):
        conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=bias)
        new, info = build_block(conv, "dwsep")
        expected = 9 * 9 * cin + cin * cout // groups + (cout if bias else 0)
        assert count_params(new) == expected
        assert new.dw.groups == cin and new.pw.groups == groups
        assert (new.pw.bias is not None) == bias and new.dw.bias is None
        assert new.dw.dilation == (5, 5) and new.dw.padding == (20, 20)
        assert info["kernel_size"] == [9, 9] and info["dilation"] == 5
    conv = nn.Conv2d(256, 256, 3, padding=1)
    assert count_params(build_block(conv, "dwsep")[0]) < count_params(conv)


def test_dwsep_copies_stride_and_refuses_1x1() -> None:
    new, _ = build_block(nn.Conv2d(16, 32, 3, stride=2, padding=1), "dwsep")
    assert new.dw.stride == (2, 2)
    with pytest.raises(ValueError, match="1x1"):
        build_block(nn.Conv2d(16, 32, 1), "dwsep")


def test_grouped_reduces_groups_and_says_so() -> None:
    new, info = build_block(nn.Conv2d(12, 18, 3, padding=1), "grouped", groups=4)
    assert new.gconv.groups == 3 and info["groups"] == 3 and "reduced" in info["note"]
    _, info = build_block(nn.Conv2d(16, 32, 3, padding=1), "grouped", groups=4)
    assert info == {"groups": 4}


def test_lowrank_rank() -> None:
    new, info = build_block(nn.Conv2d(64, 128, 3, padding=1, bias=True), "lowrank", rank=0.25)
    assert info["rank"] == 16 and new.low.out_channels == 16 and new.pw.bias is not None
    assert count_params(new) == 64 * 16 * 9 + 16 * 128 + 128


def test_unknown_block_or_option() -> None:
    conv = nn.Conv2d(16, 16, 3, padding=1)
    with pytest.raises(KeyError, match="dwsep"):
        build_block(conv, "dwsepp")
    with pytest.raises(ValueError, match="kernel_size, dilation"):
        build_block(conv, "dwsep", rank=0.5)


class Toy(nn.Module):
    """Paths like the seed's: mod4.block2.convs.conv2 and aspp.features.1.0."""

    def __init__(self) -> None:
        super().__init__()
        block = lambda: nn.Module()  # noqa: E731
        self.mod4 = nn.Module()
        for name in ("block1", "block2"):
            b = block()
            b.convs = nn.Module()
            b.convs.conv1 = nn.Conv2d(16, 16, 3, padding=1)
            b.convs.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            setattr(self.mod4, name, b)
        self.aspp = nn.Module()
        self.aspp.features = nn.Sequential(nn.Conv2d(16, 8, 1),
                                           nn.Sequential(nn.Conv2d(16, 8, 3, padding=6, dilation=6),
                                                         nn.BatchNorm2d(8)))
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in (self.mod4.block1, self.mod4.block2):
            x = x + b.convs.conv2(torch.relu(b.convs.conv1(x)))
        f = self.aspp.features
        return self.head(torch.cat([f[0](x), f[1](x)], 1))


def test_resolve_paths_glob_and_exact() -> None:
    model = Toy()
    assert resolve_paths(model, ["mod4.*.convs.conv2"]) == ["mod4.block1.convs.conv2",
                                                           "mod4.block2.convs.conv2"]
    assert resolve_paths(model, ["aspp.features.1.0", "mod4.block1.*"]) == [
        "mod4.block1.convs.conv1", "mod4.block1.convs.conv2", "aspp.features.1.0"]
    assert resolve_paths(model, ["aspp.features.*"]) == ["aspp.features.0", "aspp.features.1.0"]


def test_unknown_pattern_suggests_conv_paths() -> None:
    with pytest.raises(ValueError) as err:
        resolve_paths(Toy(), ["mod4.block2.conv.conv2"])
    assert "mod4.block2.conv.conv2" in str(err.value)
    assert "mod4.block2.convs.conv2" in str(err.value)
    with pytest.raises(ValueError, match="aspp.features.1.0"):
        resolve_paths(Toy(), ["aspp.features.1"])  # a Sequential, not a conv


def test_replace_by_glob_in_place_and_sequential_index() -> None:
    model = Toy().eval()
    x = torch.randn(1, 16, 19, 21)
    records = replace_convs(model, ["mod4.*.convs.conv2", "aspp.features.1.0"], kernel_size=5,
                            dilation=2)
    assert [r["path"] for r in records] == ["mod4.block1.convs.conv2", "mod4.block2.convs.conv2",
                                            "aspp.features.1.0"]
    assert isinstance(model.aspp.features[1][0], CheapBlock)
    assert isinstance(model.mod4.block2.convs.conv2, CheapBlock)
    rec = records[2]
    assert rec["block"] == "dwsep" and rec["in"] == 16 and rec["out"] == 8
    assert rec["kernel"] == [3, 3] and rec["dilation"] == [6, 6] and rec["groups"] == 1
    assert rec["params_before"] == 16 * 8 * 9 + 8 and rec["params_after"] == 25 * 16 + 16 * 8 + 8
    assert model(x).shape == (1, 3, 19, 21)
    # replaced blocks are never matched again
    assert "mod4.block1.convs.conv2.dw" not in resolve_paths(model, ["mod4.*"])


def test_block_follows_conv_dtype() -> None:
    model = Toy().to(torch.float64)
    replace_convs(model, ["mod4.block1.convs.conv1"], block="lowrank")
    assert model.mod4.block1.convs.conv1.low.weight.dtype == torch.float64


def test_make_cheap_student_leaves_teacher_unchanged() -> None:
    teacher = Toy()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, records = make_cheap_student(teacher, ["mod4.*.convs.*"], "grouped", groups=2)
    assert len(records) == 4
    assert isinstance(teacher.mod4.block1.convs.conv1, nn.Conv2d)
    assert teacher.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert count_params(student) < count_params(teacher)


def test_auto_plan_unet_reaches_target() -> None:
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    size = (64, 64)
    plan = auto_plan(model, target_params=0.6, input_size=size)
    assert plan["reached"] and plan["paths"]
    assert plan["params_before"] == count_params(model)
    assert plan["params_after"] <= 0.6 * plan["params_before"]
    # granularity: within one 512x512 3x3 conv's saving of the target
    assert plan["params_after"] >= 0.6 * plan["params_before"] - 512 * 512 * 9
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    student, records = make_cheap_student(model, plan["paths"], "dwsep")
    assert count_params(student) == plan["params_after"]
    assert count_flops(student, size) == plan["flops_after"]
    assert count_flops(model, size) == plan["flops_before"]
    with torch.no_grad():
        assert student.eval()(torch.randn(1, 3, *size)).shape == (1, 5, *size)
    rows = replacement_table(records, model, student, size)
    assert rows[-1]["params_after"] == plan["params_after"]
    assert rows[-1]["flops_after"] == plan["flops_after"]
    assert rows[-2]["params_before"] - rows[-2]["params_after"] == \
        plan["params_before"] - plan["params_after"]


def test_auto_plan_flops_target_and_unreachable() -> None:
    model = Toy()
    plan = auto_plan(model, target_flops=0.8, input_size=(16, 16), in_chans=16)
    assert plan["reached"] and plan["flops_after"] <= 0.8 * plan["flops_before"]
    student, _ = make_cheap_student(model, plan["paths"])
    assert count_flops(student, (16, 16), in_chans=16) == plan["flops_after"]
    plan = auto_plan(model, target_params=0.01, target_flops=0.9, input_size=(16, 16), in_chans=16)
    assert not plan["reached"] and len(plan["paths"]) == 4  # every default candidate (out >= 16)
    plan = auto_plan(model, target_params=0.95, input_size=(16, 16), in_chans=16,
                     candidates=["aspp.*"], block="lowrank", rank=0.25)
    assert plan["paths"] == ["aspp.features.1.0"] and plan["reached"]  # best fit, not both
    with pytest.raises(ValueError, match="target"):
        auto_plan(model, input_size=(16, 16))


def test_auto_plan_skips_convs_the_block_refuses() -> None:
    plan = auto_plan(Toy(), target_params=0.9, input_size=(16, 16), in_chans=16,
                     candidates=["aspp.*", "head"], kernel_size=3, dilation=6)
    assert plan["paths"] == ["aspp.features.1.0"]  # the 1x1 convs cannot become dwsep
    plan = auto_plan(Toy(), target_params=0.9, input_size=(16, 16), in_chans=16,
                     candidates=["aspp.*"])
    assert plan["paths"] == [] and not plan["reached"]  # 9x9 dwsep of 16->8 saves nothing
    with pytest.raises(ValueError, match="1x1"):
        auto_plan(Toy(), target_params=0.9, input_size=(16, 16), in_chans=16, candidates=["head"])
    with pytest.raises(ValueError, match="unknown option"):
        auto_plan(Toy(), target_params=0.9, input_size=(16, 16), in_chans=16, rank=0.5)
