"""Model factory: output shapes of every architecture, kdsemseg encoders exactly as specified,
parameter counts derived from the architecture (not just remembered)."""
from __future__ import annotations

import pytest
import torch

from segkd.models import KD_RESNET_LAYERS, create_model


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _basic_resnet_params(layers: list[int]) -> int:
    """torchvision BasicBlock ResNet without the classifier: stem + blocks (+ downsample)."""
    total = 3 * 64 * 49 + 2 * 64
    cin = 64
    for width, n in zip((64, 128, 256, 512), layers):
        for b in range(n):
            total += cin * width * 9 + 2 * width + width * width * 9 + 2 * width
            if cin != width:
                total += cin * width + 2 * width
            cin = width
    return total


def _unet_decoder_params(classes: int) -> int:
    """smp UNet decoder (256,128,64,32,16), no centre block, 3x3 head with bias."""
    ins, skips, outs = [512, 256, 128, 64, 32], [256, 128, 64, 64, 0], [256, 128, 64, 32, 16]
    total = sum((i + s) * o * 9 + 2 * o + o * o * 9 + 2 * o for i, s, o in zip(ins, skips, outs))
    return total + 16 * classes * 9 + classes


@pytest.mark.parametrize("name,layers", sorted(KD_RESNET_LAYERS.items()))
def test_kdsemseg_unets_match_the_architecture(name, layers):
    with torch.device("meta"):
        m = create_model("unet", name, 11)
    assert _params(m.encoder) == _basic_resnet_params(layers)
    assert _params(m) == _basic_resnet_params(layers) + _unet_decoder_params(11)
    blocks = [len(getattr(m.encoder.model, f"layer{i}")) for i in range(1, 5)]
    assert blocks == layers


def test_seed_parameter_counts():
    """The counts `segkd info` prints for the seeds' models."""
    with torch.device("meta"):
        assert _params(create_model("unet", "kd_resnet18", 11)) == 14_329_659
        assert _params(create_model("unet", "kd_resnet34", 11)) == 24_437_819
        assert _params(create_model("jfzhang95_deeplabv3plus", num_classes=21)) == 59_344_309
        assert _params(create_model("deeplabv3plus_ofd", "resnet18", 21)) == 16_608_181  # seed: 16.6M
        assert _params(create_model("deeplabv3plus_ofd", "mobilenetv2_100", 21)) == 5_816_053  # 5.8M


@pytest.mark.parametrize("arch,encoder,kw", [
    ("unet", "kd_resnet10", {}), ("deeplabv3plus", "resnet18", {"output_stride": 16}),
    ("deeplabv3plus", "resnet18", {"output_stride": 8}), ("deeplabv3", "kd_resnet10", {}),
    ("fpn", "kd_resnet10", {}), ("pspnet", "kd_resnet10", {}),
    ("deeplabv3plus_ofd", "mobilenetv2_100", {}), ("classifier", "kd_resnet10", {}),
])
def test_output_shapes(arch, encoder, kw):
    m = create_model(arch, encoder, 5, **kw).eval()
    with torch.no_grad():
        y = m(torch.randn(1, 3, 64, 96))
    assert y.shape == ((1, 5, 1, 1) if arch == "classifier" else (1, 5, 64, 96))


def test_unknown_names_suggest():
    from segkd.core.errors import ConfigError

    with pytest.raises(ConfigError, match="Did you mean"):
        create_model("unett", "kd_resnet10", 3)
    with pytest.raises(ConfigError, match="kd_resnet18"):
        create_model("unet", "kd_resnet81", 3)


def test_pretrained_not_available_for_custom_depths():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_model("unet", "kd_resnet20", 3, pretrained=True)


def test_every_smp_decoder_is_offered_and_builds():
    """The arch table is smp's own: a decoder smp adds (upernet, segformer, dpt) is not forgotten."""
    import segmentation_models_pytorch as smp

    from segkd.models import list_models, smp_archs

    table = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)
    if table:
        assert {k.lower() for k in table} == set(smp_archs())
    for arch in ("upernet", "segformer"):
        if arch in smp_archs():
            assert arch in list_models()
            m = create_model(arch, "resnet18", 4).eval()
            with torch.no_grad():
                assert m(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
