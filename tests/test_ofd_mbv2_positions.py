"""The MobileNetV2 OFD recipes take their features where the OFD authors' code does
(Segmentation/modeling/backbone/mobilenet.py, ``extract_feature``): the expansion 1x1 conv + BN
of blocks 4, 7 and 14 of torchvision-style ``features`` (timm ``blocks.2.0``, ``3.0``, ``5.0``),
before their ReLU6 -- 144 / 192 / 576 channels at strides 4 / 8 / 16 -- and the backbone's
linear 320-channel output; every OFD weight is 1e-5 x 1/[8, 4, 2, 1, 1, 16]
(train_with_distillation.py: ``loss_distill / batch * 1e-5`` whatever the backbone)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from segkd.config.schema import load_config
from segkd.distill.recorder import Recorder, get_module

ROOT = Path(__file__).resolve().parents[1]
MBV2 = ROOT / "configs" / "voc" / "mbv2"
DIVIDERS = {"ofd1": 8, "ofd2": 4, "ofd3": 2, "ofd4": 1, "ofd5": 1, "ofd6": 16}
BACKBONE = {  # term -> (channels, stride, the BN whose output is the feature, or None: linear)
    "ofd1": (144, 4, "backbone.blocks.2.0.bn1"),
    "ofd2": (192, 8, "backbone.blocks.3.0.bn1"),
    "ofd3": (576, 16, "backbone.blocks.5.0.bn1"),
    "ofd4": (320, 16, None),
}


def _ofd_terms(path: Path) -> list:
    return [t for s in load_config(path).stages for t in s.terms if t.loss == "ofd"]


@pytest.mark.parametrize("name", ["ofd.yaml", "combo.yaml"])
def test_mbv2_ofd_weights_are_the_authors(name: str) -> None:
    terms = _ofd_terms(MBV2 / name)
    assert terms
    for t in terms:
        assert t.weight == pytest.approx(1e-5 / DIVIDERS[t.name], rel=1e-9), (name, t.name)


@pytest.fixture(scope="module")
def student_features():
    from segkd.models.spec import build_from_spec, model_spec

    cfg = load_config(MBV2 / "ofd.yaml")
    torch.manual_seed(0)
    model = build_from_spec(model_spec(cfg.model.model_copy(update={"pretrained": False}), 21))
    for m in model.modules():  # non-trivial BatchNorm statistics, so pre/post ReLU6 differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 1.0)
    model.eval()
    terms = {t.name: t for t in _ofd_terms(MBV2 / "ofd.yaml")}
    rec = Recorder(model, "student")
    keys = {n: rec.add(t.student, t.student_hook) for n, t in terms.items()}
    convs = {}  # the input of each BN (its conv's output), to recompute the BN independently
    handles = [get_module(model, bn).register_forward_pre_hook(
        lambda _m, inp, bn=bn: convs.__setitem__(bn, inp[0].clone()))
        for _, _, bn in BACKBONE.values() if bn]
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for h in handles:
        h.remove()
    feats = {n: rec.get(k) for n, k in keys.items()}
    rec.remove()
    return model, feats, convs


@pytest.mark.parametrize("term", sorted(BACKBONE))
def test_mbv2_positions_channels_strides_pre_activation(term: str, student_features) -> None:
    model, feats, convs = student_features
    channels, stride, bn_path = BACKBONE[term]
    f = feats[term]
    assert f.shape == (2, channels, 64 // stride, 64 // stride)
    if bn_path is None:
        return
    bn = get_module(model, bn_path)
    expected = F.batch_norm(convs[bn_path], bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            training=False, eps=bn.eps)
    assert torch.allclose(f, expected, atol=1e-5)  # the BN output itself ...
    assert (f < 0).any() and not torch.allclose(f, f.clamp(0, 6))  # ... before the ReLU6
