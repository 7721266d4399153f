"""The Distiller's speed-ups change nothing but speed: bf16 teacher weights under autocast, the
float32 NCHW logits the losses share, and leaving logits out of the training step's output."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from segkd.distill.distiller import Distiller, Term
from segkd.models.factory import create_model


class StdConv(nn.Conv2d):
    """A Conv2d subclass that uses its weight in another way: must stay float32."""

    def forward(self, x):
        w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding)


def _pair(num_classes: int = 5):
    torch.manual_seed(0)
    teacher = create_model("unet", "kd_resnet14", num_classes=num_classes).eval()
    student = create_model("unet", "kd_resnet10", num_classes=num_classes)
    return teacher, student


TERMS = [Term(name="ce", loss="ce", teacher=None), Term(name="kd", loss="kd", options={"temperature": 2.0}),
         Term(name="at", loss="at", student="encoder.model.layer3", teacher="encoder.model.layer3")]


def _losses(d: Distiller, x, y) -> dict:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(x, y)
    out["loss"].backward()
    grads = [p.grad.clone() for p in d.student.parameters() if p.grad is not None]
    return {**{k: v.detach() for k, v in out.items()}, "grads": grads}


def test_bf16_teacher_weights_give_the_same_losses_and_gradients():
    teacher, student = _pair()
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (2, 64, 64))
    ref = Distiller(copy.deepcopy(student), copy.deepcopy(teacher))
    fast = Distiller(copy.deepcopy(student), copy.deepcopy(teacher))
    fast.store_teacher_weights_in(torch.bfloat16)
    for d in (ref, fast):
        d.configure(TERMS, torch.zeros(2, 3, 64, 64))  # the probe runs outside autocast
    convs = [m for m in fast.teacher.modules() if type(m) is nn.Conv2d]
    bns = [m for m in fast.teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert all(m.weight.dtype == torch.float32 for m in bns)
    a, b = _losses(ref, x, y), _losses(fast, x, y)
    for k in ("loss", "loss/ce", "loss/kd", "loss/at"):
        assert torch.equal(a[k], b[k]), k
    assert all(torch.equal(g, h) for g, h in zip(a["grads"], b["grads"], strict=True))
    assert all(p.grad is None for p in fast.teacher.parameters())


def test_teacher_weight_cast_leaves_conv_subclasses_and_fp32_runs_alone():
    teacher = nn.Sequential(nn.Conv2d(3, 4, 3), StdConv(4, 4, 3), nn.Linear(4, 4))
    d = Distiller(nn.Conv2d(3, 4, 1), teacher)
    d.store_teacher_weights_in(torch.float32)
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    d.store_teacher_weights_in(torch.bfloat16)
    assert teacher[0].weight.dtype == torch.bfloat16 and teacher[2].weight.dtype == torch.bfloat16
    assert teacher[1].weight.dtype == torch.float32


def test_engine_stores_teacher_weights_in_the_run_precision(tmp_path, tiny, teacher_ckpt):
    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)}, trainer={"precision": "bf16-mixed"},
               stages=[{"name": "kd", "epochs": 1, "terms": [{"loss": "ce"}, {"loss": "kd"}],
                        "optimizer": {"name": "adam", "lr": 1e-3}}])
    eng = Engine(config_from_dict(raw), tmp_path / "run")
    summary = eng.run()
    convs = [m for m in eng.distiller.teacher.modules() if type(m) is nn.Conv2d]
    assert all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert summary is not None and (tmp_path / "run" / "best.pt").is_file()


@pytest.mark.parametrize("keep", [True, False])
def test_training_step_output_leaves_logits_out(keep):
    teacher, student = _pair()
    d = Distiller(student, teacher)
    d.configure(TERMS[:2], torch.zeros(2, 3, 64, 64))
    out = d(torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64)), keep_logits=keep)
    assert ("logits" in out) is keep and "loss/kd" in out
    assert "logits" in d(torch.randn(2, 3, 64, 64), with_losses=False, keep_logits=False)


def test_teacher_precision_32_runs_the_teacher_in_float32_under_a_bf16_run():
    teacher, student = _pair()
    d = Distiller(student, teacher, teacher_dtype=torch.float32)
    d.store_teacher_weights_in(torch.float32)
    d.configure(TERMS[:2], torch.zeros(2, 3, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t_logits = d._teacher_forward(torch.randn(2, 3, 64, 64))
        s_logits = d(torch.randn(2, 3, 64, 64), with_losses=False)["logits"]
    assert t_logits.dtype == torch.float32 and s_logits.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in d.teacher.parameters())
