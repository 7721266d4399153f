"""Every model segkd builds returns the logits tensor (no call site unwraps tuples or dicts), and
``segkd.load_model`` rebuilds a saved model in eval mode."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import segkd
from segkd.core.checkpoint import save_checkpoint
from segkd.core.errors import CheckpointError
from segkd.core.registry import MODELS
from segkd.engine.state import model_checkpoint
from segkd.models import create_model
from segkd.models.factory import _load_extra_models
from segkd.models.spec import build_from_spec

_load_extra_models()
# the smallest arguments each registered architecture needs (the rest take their defaults)
TINY = {"classifier": {"encoder": "kd_resnet10"}, "deeplabv3plus_ofd": {"encoder": "mobilenetv2_100"}}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_returns_a_tensor(name: str) -> None:
    """Imported teachers (torchvision's dict output, the published DeepLab/WideResNet ones), the
    classifier and OFD's DeepLab: a new registration is checked here without being listed."""
    model = create_model(name, num_classes=3, **TINY.get(name, {})).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert type(out) is torch.Tensor and out.shape[:2] == (1, 3)


def test_smp_models_with_an_auxiliary_head_return_the_masks() -> None:
    """smp returns ``(masks, labels)`` when built with ``aux_params``; segkd keeps the masks and
    the auxiliary head's weights (its state-dict keys are smp's own)."""
    import segmentation_models_pytorch as smp

    model = create_model("unet", "kd_resnet10", 3, aux_params={"classes": 3}).eval()
    plain = smp.Unet("tu-kd_resnet10", encoder_weights=None, classes=3, aux_params={"classes": 3})
    assert list(model.state_dict()) == list(plain.state_dict())
    assert isinstance(model, smp.Unet)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert type(out) is torch.Tensor and torch.equal(out, plain.eval()(x)[0])


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, dict]:
    spec = {"arch": "unet", "kwargs": {"encoder": "kd_resnet10", "num_classes": 3}}
    model = build_from_spec(spec)
    meta = {"classes": ["a", "b", "c"], "num_classes": 3, "mean": [0.5] * 3, "std": [0.25] * 3,
            "ignore_index": 255}
    path = save_checkpoint(model_checkpoint(model, spec, [], meta, {}), tmp_path / "run" / "best.pt")
    return path, model, meta


def test_load_model_rebuilds_a_checkpoint_in_eval_mode(tmp_path: Path) -> None:
    path, model, meta = _saved(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    for target in (path, str(path.parent)):  # a file, or a run directory (its best.pt)
        loaded, got = segkd.load_model(target)
        assert not loaded.training and got == meta
        with torch.no_grad():
            assert torch.equal(loaded(x), model.eval()(x))


def test_load_model_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        segkd.load_model(path)
