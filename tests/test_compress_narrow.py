"""Cut and narrowed copies of a UNet-ResNet teacher (segkd.models.narrow, init_match mapping)."""
import pytest
import torch
from conftest import tiny_cfg

from segkd.config.schema import config_from_dict
from segkd.core.errors import ConfigError
from segkd.engine.init import initialise_student
from segkd.models import create_model
from segkd.models.narrow import derive_state, keep_blocks, stage_layers, student_spec
from segkd.models.spec import build_from_spec

TEACHER = {"arch": "unet", "kwargs": {"encoder": "kd_resnet34", "num_classes": 3}}


def _teacher():
    torch.manual_seed(0)
    t = build_from_spec(TEACHER).eval()
    with torch.no_grad():  # BatchNorm with distinct statistics and scales, as after training
        for m in t.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.1, 2.0)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return t


def test_width_one_and_no_cut_is_the_teacher_exactly():
    teacher = _teacher()
    spec = student_spec(TEACHER, width=1.0)
    student = build_from_spec(spec).eval()
    note = initialise_student(student, "teacher", {"blocks": {}, "channels": "bn"}, teacher)
    assert "all tensors" in note
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(student(x), teacher(x))


def test_narrowed_student_keeps_the_selected_channels_weights():
    teacher = _teacher()
    spec = student_spec(TEACHER, layers=[2, 2, 2, 2], width=0.5)
    assert spec["kwargs"]["channels"] == [64, 64, 128, 256]
    student = build_from_spec(spec)
    blocks = keep_blocks([3, 4, 6, 3], [2, 2, 2, 2], "even")
    assert blocks["encoder.model.layer3"] == [0, 5] and blocks["encoder.model.layer2"] == [0, 3]
    t = teacher.state_dict()
    state, narrowed = derive_state(t, student.state_dict(), blocks, "bn")
    student.load_state_dict(state)
    # layer3's residual chain: chosen once from the summed |gamma| of every BN writing into it
    chain = [f"encoder.model.layer3.{j}.bn2.weight" for j in (0, 5)] + ["encoder.model.layer3.0.downsample.1.weight"]
    score = sum(t[k].abs() for k in chain)
    keep = torch.sort(torch.topk(score, 128).indices).values
    mid = torch.sort(torch.topk(t["encoder.model.layer3.5.bn1.weight"].abs(), 128).indices).values
    s = student.state_dict()
    assert torch.equal(s["encoder.model.layer3.1.conv2.weight"], t["encoder.model.layer3.5.conv2.weight"][keep][:, mid])
    assert torch.equal(s["encoder.model.layer3.1.conv1.weight"], t["encoder.model.layer3.5.conv1.weight"][mid][:, keep])
    assert torch.equal(s["encoder.model.layer3.0.downsample.1.running_mean"],
                       t["encoder.model.layer3.0.downsample.1.running_mean"][keep])
    # the first decoder block reads layer4 (s4) and the layer3 skip (s3) concatenated
    s4 = torch.sort(torch.topk(sum(t[k].abs() for k in ["encoder.model.layer4.0.bn2.weight",
                    "encoder.model.layer4.2.bn2.weight", "encoder.model.layer4.0.downsample.1.weight"]), 256).indices).values
    w = s["decoder.blocks.0.conv1.0.weight"]
    assert w.shape[1] == 256 + 128
    d0 = torch.sort(torch.topk(t["decoder.blocks.0.conv1.1.weight"].abs(), 128).indices).values
    assert torch.equal(w[:, :256], t["decoder.blocks.0.conv1.0.weight"][d0][:, s4])
    assert "s3" in narrowed and narrowed["s3"] == 128
    assert student.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_depth_cut_to_a_named_variant_and_the_config_mapping():
    spec = student_spec(TEACHER, layers=[2, 2, 2, 2])
    assert spec["kwargs"]["encoder"] == "kd_resnet18" and "layers" not in spec["kwargs"]
    spec = student_spec(TEACHER, layers=[1, 2, 2, 1])
    assert spec["kwargs"]["layers"] == [1, 2, 2, 1]
    assert stage_layers(build_from_spec(spec).state_dict()) == [1, 2, 2, 1]
    cfg = config_from_dict(tiny_cfg(model={"init_from": "teacher", "init_match": {
        "blocks": {"encoder.model.layer1": [0, 2]}, "channels": "norm"}}))
    assert cfg.model.init_match.blocks == {"encoder.model.layer1": [0, 2]}
    with pytest.raises(ConfigError):
        student_spec({"arch": "fpn", "kwargs": {"encoder": "kd_resnet34"}}, width=0.5)
    with pytest.raises(ConfigError, match="cannot keep"):
        keep_blocks([3, 4, 6, 3], [4, 1, 1, 1])
    from segkd.models.narrow import block_spec

    with pytest.raises(ConfigError, match="must start with block 0"):
        block_spec({"encoder.model.layer3": [1]})


def test_a_narrowed_kd_resnet_trains_from_the_teacher(tmp_path, teacher_ckpt):
    """End to end through the engine: a student half as wide, initialised by the mapping."""
    from segkd.engine import Engine

    raw = tiny_cfg(name="narrow", model={"encoder": "kd_resnet14", "kwargs": {
        "layers": [1, 1, 1, 1], "channels": [64, 64, 128, 256],
        "decoder_channels": [128, 64, 32, 16, 8]}, "init_from": "teacher",
        "init_match": {"blocks": {"encoder.model.layer3": [0], "encoder.model.layer4": [0]}}},
        teacher={"checkpoint": str(teacher_ckpt)},
        stages=[{"terms": [{"loss": "ce"}, {"loss": "dist"}]}])
    summary = Engine(config_from_dict(raw), tmp_path / "run").run()
    assert summary["splits"]["val"]["mIoU"] >= 0


BOTTLENECK = {"arch": "unet", "kwargs": {"encoder": "resnet26", "num_classes": 3}}  # [2,2,2,2]


def _trained_like(spec):
    torch.manual_seed(0)
    t = build_from_spec(spec).eval()
    with torch.no_grad():
        for m in t.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.1, 2.0)
                m.running_var.uniform_(0.5, 1.5)
    return t


def test_bottleneck_resnet_teacher_is_cut_and_narrowed_from_its_own_tensors():
    teacher = _trained_like(BOTTLENECK)
    t = teacher.state_dict()
    same = build_from_spec(student_spec(BOTTLENECK, width=1.0)).eval()
    initialise_student(same, "teacher", {"blocks": {}, "channels": "bn"}, teacher)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(same(x), teacher(x))
    spec = student_spec(BOTTLENECK, layers=[1, 1, 2, 1], width=0.5)
    # a Bottleneck stage 1 has its own residual chain (64 -> 256 projection): it narrows too
    assert spec["kwargs"]["channels"] == [32, 64, 128, 256] and spec["kwargs"]["layers"] == [1, 1, 2, 1]
    student = build_from_spec(spec)
    blocks = keep_blocks([2, 2, 2, 2], [1, 1, 2, 1])
    state, narrowed = derive_state(t, student.state_dict(), blocks, "bn")
    student.load_state_dict(state)
    assert narrowed["s1"] == 128 and narrowed["s4"] == 1024 and "s0" not in narrowed  # the stem stays
    s = student.state_dict()
    chain = ["encoder.model.layer3.0.bn3.weight", "encoder.model.layer3.1.bn3.weight",
             "encoder.model.layer3.0.downsample.1.weight"]
    keep = torch.sort(torch.topk(sum(t[k].abs() for k in chain), 512).indices).values
    mid2 = torch.sort(torch.topk(t["encoder.model.layer3.1.bn2.weight"].abs(), 128).indices).values
    mid1 = torch.sort(torch.topk(t["encoder.model.layer3.1.bn1.weight"].abs(), 128).indices).values
    assert torch.equal(s["encoder.model.layer3.1.conv3.weight"], t["encoder.model.layer3.1.conv3.weight"][keep][:, mid2])
    assert torch.equal(s["encoder.model.layer3.1.conv2.weight"], t["encoder.model.layer3.1.conv2.weight"][mid2][:, mid1])
    assert torch.equal(s["encoder.model.layer3.1.conv1.weight"], t["encoder.model.layer3.1.conv1.weight"][mid1][:, keep])
    # the decoder's last block reads the 64-channel stem output, unnarrowed
    assert s["decoder.blocks.3.conv1.0.weight"].shape[1] == 32 + 64
    assert student.eval()(x).shape == (2, 3, 32, 32)


def test_compress_plans_cut_and_narrowed_students_of_a_bottleneck_teacher(tmp_path):
    from segkd.apps.compress.candidates import teacher_candidates
    from segkd.apps.compress.teacher import Teacher
    from segkd.models.cost import count_params

    teacher = _trained_like(BOTTLENECK)
    target = count_params(teacher) // 3
    cands, notes = teacher_candidates(Teacher(teacher, BOTTLENECK, tmp_path / "t.pt"), params_target=target)
    assert not notes and {c.kind for c in cands} == {"cut", "narrow", "cut+narrow"}
    fit = [c for c in cands if c.name.endswith("(fit to target)")]
    assert fit and count_params(fit[0].build()) <= target
    for c in (cands[0], fit[0]):  # the engine's init path loads every tensor from the teacher
        student = c.build()
        note = initialise_student(student, "teacher", c.model_cfg["init_match"], teacher)
        assert "all tensors" in note
