"""model.init_from / init_match: a student initialised from a bigger model of the same widths."""
import pytest
import torch

from segkd.core.errors import CheckpointError, ConfigError
from segkd.engine.init import initialise_student, shared_tensors
from segkd.models import create_model


def _unets():
    torch.manual_seed(0)
    teacher = create_model("unet", "kd_resnet34", 3)
    student = create_model("unet", "kd_resnet18", 3)
    return teacher, student


def test_shared_init_copies_every_tensor_of_the_same_name_and_shape():
    teacher, student = _unets()
    note = initialise_student(student, "teacher", "shared", teacher)
    t, s = teacher.state_dict(), student.state_dict()
    # ResNet18's blocks are the first two of each ResNet34 stage; stem, decoder and head are shared
    for key in ("encoder.model.conv1.weight", "encoder.model.layer3.1.conv2.weight",
                "decoder.blocks.0.conv1.0.weight", "segmentation_head.0.weight",
                "encoder.model.layer1.0.bn1.running_mean"):
        assert torch.equal(s[key], t[key]), key
    assert "100.0% of its parameters" in note
    hit, covered, total = shared_tensors(student, t)
    assert covered == total and len(hit) == len(s)


def test_shared_init_leaves_unmatched_tensors_alone():
    teacher, student = _unets()
    other = create_model("unet", "kd_resnet18", 5)  # another head: its head does not match
    before = student.state_dict()["segmentation_head.0.weight"].clone()
    note = initialise_student(student, "teacher", "shared", other)
    assert torch.equal(student.state_dict()["segmentation_head.0.weight"], before)
    assert torch.equal(student.state_dict()["encoder.model.conv1.weight"],
                       other.state_dict()["encoder.model.conv1.weight"])
    hit, covered, total = shared_tensors(student, other.state_dict())
    assert covered < total and len(hit) == len(student.state_dict()) - 2  # head weight + bias
    assert f"{len(hit)} tensors" in note


def test_strict_init_refuses_another_architecture_and_teacher_needs_a_teacher():
    teacher, student = _unets()
    with pytest.raises(CheckpointError, match="does not match this architecture"):
        initialise_student(student, "teacher", "strict", teacher)
    with pytest.raises(ConfigError, match="needs a `teacher:` section"):
        initialise_student(student, "teacher", "shared", None)
    unrelated = torch.nn.Sequential(torch.nn.Conv2d(3, 7, 1))
    with pytest.raises(ConfigError, match="nothing to initialise from"):
        initialise_student(student, "teacher", "shared", unrelated)
