"""Imported teachers: published architectures, strict checkpoint import, torchvision wrappers.

The fixture tests need ../shared/fixtures/teachers (key lists + reference logits of the real
checkpoints, see its README); they skip when that folder is absent, and fail instead when
SEGKD_REQUIRE_SHARED=1 or CI is set (.ci/run sets it: CI always has ../shared).
"""
from __future__ import annotations

import importlib.util
import json
import zipfile
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from conftest import require_shared

import segkd.models.teachers as teachers
from segkd import load_model
from segkd.core.errors import CheckpointError
from segkd.core.registry import MODELS
from segkd.models.teachers.importer import extract_state_dict, safe_load

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "teachers"
JFZ_PARAMS, WRN_PARAMS = 59_344_309, 137_103_936


def _fixtures() -> ModuleType:
    require_shared(FIXTURES / "deterministic_weights.py")  # a failure in CI, where ../shared exists
    spec = importlib.util.spec_from_file_location("deterministic_weights",
                                                  FIXTURES / "deterministic_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _optimizer_state() -> dict:
    """A small SGD ``optimizer.state_dict()`` (the real one has every momentum buffer)."""
    group = {"lr": 0.007, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4, "nesterov": False}
    return {"state": {0: {"momentum_buffer": torch.zeros(4)}},
            "param_groups": [{**group, "params": [0]}, {**group, "params": [1]}]}


def _jfzhang95_container(sd: dict) -> dict:
    """As train.py Saver.save_checkpoint writes it; best_pred is a numpy float (np.nanmean)."""
    return {"epoch": 50, "state_dict": OrderedDict(sd), "optimizer": _optimizer_state(),
            "best_pred": np.float64(0.7843)}


def _nvidia_container(sd: dict) -> dict:
    """As utils/misc.py evaluate_eval writes it: DataParallel keys ('module.' already in sd)."""
    return {"state_dict": OrderedDict(sd), "optimizer": _optimizer_state(), "epoch": 175,
            "mean_iu": np.float64(0.8134), "command": "python train.py --arch network.deepv3.DeepWV3Plus"}


CASES = {
    "jfzhang95-deeplabv3plus": ("jfzhang95_deeplabv3plus_resnet101_voc", _jfzhang95_container),
    "nvidia-deepwv3plus": ("nvidia_deepwv3plus_cityscapes", _nvidia_container),
}


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_fixture_checkpoint_reproduces_reference_logits(fmt: str, tmp_path: Path, segkd) -> None:
    dw = _fixtures()
    name, container = CASES[fmt]
    info = json.loads((FIXTURES / f"{name}.json").read_text())
    ref_file = next(FIXTURES.glob(f"{name}.logits_*.npy"))
    ref = np.load(ref_file)
    src = tmp_path / "published.pth"
    torch.save(container(dw.state_dict_for(info["keys"])), src)

    out = tmp_path / "teacher.pt"  # through the public command
    proc = segkd("import-teacher", str(src), "--format", fmt, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    src.unlink()
    model, meta = load_model(out)
    assert sum(p.numel() for p in model.parameters()) == info["num_parameters"]
    assert len(model.state_dict()) == info["num_keys"]
    assert meta["output_stride"] == info["output_stride"]
    assert meta["num_classes"] == ref.shape[1] == len(meta["classes"])
    assert tuple(meta["mean"]) == tuple(info["input_normalization"]["mean"])

    x = dw.reference_input([1, 3, ref.shape[2], ref.shape[3]])
    with torch.no_grad():
        logits = model.eval()(x).numpy()
    assert logits.shape == ref.shape
    rel = np.linalg.norm(logits - ref) / np.linalg.norm(ref)
    assert rel < 1e-4, f"{fmt}: relative error {rel:.2e}"


@pytest.mark.parametrize("arch,count", [("jfzhang95_deeplabv3plus", JFZ_PARAMS),
                                        ("deepwv3plus", WRN_PARAMS)])
def test_parameter_counts(arch: str, count: int) -> None:
    with torch.device("meta"):  # no memory, no init cost
        model = MODELS.build(arch)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count


def test_deepwv3plus_keeps_original_module_paths() -> None:
    with torch.device("meta"):
        names = dict(MODELS.build("deepwv3plus").named_modules())
    for path in ("mod4.block2.convs.conv2", "mod7.block1.convs.conv3", "aspp.features.1.0",
                 "aspp.img_conv.0", "bot_fine", "bot_aspp", "final.6", "pool3"):
        assert path in names, path


@pytest.mark.parametrize("output_stride,backbone", [(16, "resnet101"), (8, "resnet50")])
def test_jfzhang95_output_shape(output_stride: int, backbone: str) -> None:
    model = MODELS.build("jfzhang95_deeplabv3plus", num_classes=5, backbone=backbone,
                         output_stride=output_stride).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 45, 61))
    assert out.shape == (1, 5, 45, 61)


@pytest.fixture(scope="module")
def jfz_state_dict() -> dict[str, torch.Tensor]:
    return MODELS.build("jfzhang95_deeplabv3plus").state_dict()


def test_strict_load_lists_missing_and_unexpected(jfz_state_dict, tmp_path: Path) -> None:
    sd = dict(jfz_state_dict)
    del sd["aspp.aspp3.bn.running_var"]
    sd["decoder.conv_renamed.weight"] = sd.pop("decoder.conv1.weight")
    sd["aspp.conv1.weight"] = torch.zeros(256, 1024, 1, 1)
    torch.save({"state_dict": sd, "epoch": 1}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        teachers.load_teacher_checkpoint(tmp_path / "bad.pth", "jfzhang95-deeplabv3plus")
    msg = str(err.value)
    assert "missing keys (2)" in msg and "aspp.aspp3.bn.running_var" in msg
    assert "decoder.conv1.weight" in msg
    assert "unexpected keys (1)" in msg and "decoder.conv_renamed.weight" in msg
    assert "aspp.conv1.weight: checkpoint (256, 1024, 1, 1) vs model (256, 1280, 1, 1)" in msg


def test_bare_and_prefixed_state_dicts_load(jfz_state_dict, tmp_path: Path) -> None:
    prefixed = {f"module.{k}": v for k, v in jfz_state_dict.items()}
    torch.save(prefixed, tmp_path / "bare.pth")
    model, meta = teachers.load_teacher_checkpoint(tmp_path / "bare.pth", "jfzhang95-deeplabv3plus")
    assert not model.training and meta["classes"][0] == "background"
    assert meta["num_classes"] == 21 and meta["ignore_index"] == 255
    with pytest.raises(CheckpointError, match="not a 'nvidia-deepwv3plus' checkpoint"):
        teachers.load_teacher_checkpoint(tmp_path / "bare.pth", "nvidia-deepwv3plus")


def test_other_class_count_is_read_from_checkpoint(tmp_path: Path) -> None:
    sd = MODELS.build("jfzhang95_deeplabv3plus", num_classes=19, backbone="resnet101").state_dict()
    torch.save({"state_dict": sd, "best_pred": np.float64(0.5)}, tmp_path / "city.pth")
    out = teachers.import_teacher(tmp_path / "city.pth", "jfzhang95-deeplabv3plus",
                                  tmp_path / "sub" / "t.pt")
    model, meta = load_model(out)
    assert meta["num_classes"] == 19 and meta["classes"][3] == "class_3"
    assert meta["source"]["best_pred"] == pytest.approx(0.5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["t.pt", "t.pt.sha256"]  # no temp file


class _NotATensor:  # pickled by reference: weights_only must refuse it
    pass


def test_unsafe_and_malformed_files_are_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": _NotATensor()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match="weights_only=True") as err:
        teachers.load_teacher_checkpoint(tmp_path / "obj.pth", "nvidia-deepwv3plus")
    assert "_NotATensor" in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    torch.save({"epoch": 3}, tmp_path / "nosd.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        teachers.load_teacher_checkpoint(tmp_path / "nosd.pth", "nvidia-deepwv3plus")
    with pytest.raises(CheckpointError, match="not a segkd checkpoint"):
        load_model(tmp_path / "nosd.pth")
    with pytest.raises(CheckpointError, match="unknown teacher format"):
        teachers.load_teacher_checkpoint(tmp_path / "nosd.pth", "nvidia")


def test_numpy_scalars_pickled_by_numpy1_are_accepted(tmp_path: Path) -> None:
    """The real 2018/2019 files name numpy 1.x's ``numpy.core.multiarray.scalar``."""
    torch.save({"state_dict": {"w": torch.ones(2)}, "best_pred": np.float64(0.25)}, tmp_path / "a.pth")
    with zipfile.ZipFile(tmp_path / "a.pth") as zin, \
            zipfile.ZipFile(tmp_path / "b.pth", "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(item, data)
    assert safe_load(tmp_path / "b.pth")["best_pred"] == 0.25


def test_extract_state_dict_strips_module_prefix_only_when_all_keys_have_it() -> None:
    t = torch.zeros(1)
    assert list(extract_state_dict({"state_dict": {"module.a": t, "module.b": t}})) == ["a", "b"]
    assert list(extract_state_dict({"module.a": t, "b": t})) == ["module.a", "b"]


TV = ["tv_deeplabv3_resnet50", "tv_deeplabv3_resnet101", "tv_fcn_resnet50", "tv_fcn_resnet101",
      "tv_lraspp_mobilenet_v3_large"]


@pytest.mark.parametrize("name", TV)
def test_torchvision_wrappers_return_logits(name: str) -> None:
    import torchvision.models.segmentation as tvseg

    model = MODELS.build(name, num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 56))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 40, 56)
    original = getattr(tvseg, name[3:])(weights=None, weights_backbone=None, num_classes=4)
    assert list(model.state_dict()) == list(original.state_dict())  # torchvision keys kept


def test_a_missing_shared_folder_fails_when_ci_requires_it(tmp_path, monkeypatch):
    """Outside CI a missing ../shared skips; with SEGKD_REQUIRE_SHARED=1 (set by .ci/run) or CI
    set, it is a failure naming the path: a CI without the real teachers must not go green."""
    missing = tmp_path / "shared" / "fixtures"
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SEGKD_REQUIRE_SHARED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="SEGKD_REQUIRE_SHARED=1"):
        require_shared(missing)
    for var, value in (("SEGKD_REQUIRE_SHARED", "1"), ("CI", "true")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(pytest.fail.Exception, match=f"{missing} is missing"):
                require_shared(missing)
    require_shared(tmp_path)  # present: nothing happens
