"""A new loss is one class and a registration: the losses below are defined and registered in
this file alone (nothing in segkd names them) and train end to end through the engine. One
needs the teacher's BatchNorm (its ``bind``), one reads labels only. The contract's checks
refuse wrong wiring at build time, each with a message naming the term."""
from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segkd.config.schema import Term, config_from_dict
from segkd.core.errors import ConfigError
from segkd.core.registry import LOSSES
from segkd.distill.distiller import Distiller
from segkd.distill.losses import Loss, contract_of
from segkd.distill.recorder import get_module
from segkd.engine import Engine

FEAT = "encoder.model.layer3.0.act2"  # a pre-ReLU position (input hook) in both tiny models
BN = "encoder.model.layer3.0.bn2"  # the teacher BatchNorm whose output feeds it


class TeacherBNStandardised(Loss):
    """MSE of student and teacher pre-ReLU features, both standardised by the teacher's
    BatchNorm affine (``(x - beta) / |gamma|``), which ``bind`` reads from the teacher."""

    inputs = "features"
    wiring = ("bn",)  # a module path: wiring, not a constructor argument
    binds: list[Term] = []  # every bind call, for the test to look at

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("shift", None, persistent=False)
        self.register_buffer("scale", None, persistent=False)

    def bind(self, teacher: nn.Module, term: Term) -> None:
        bn = get_module(teacher, term.options["bn"], "teacher")
        self.shift = bn.bias.detach().clone().view(1, -1, 1, 1)
        self.scale = bn.weight.detach().abs().clamp(min=self.eps).view(1, -1, 1, 1)
        TeacherBNStandardised.binds.append(term)

    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        s = (student.float() - self.shift) / self.scale
        t = (teacher.detach().float() - self.shift) / self.scale
        return F.mse_loss(s, t)


class SoftDice(Loss):
    """1 - mean soft Dice of the student's class probabilities against the labels."""

    needs_teacher = False
    needs_target = True

    def forward(self, student: Tensor, teacher: Tensor | None = None, **extra: Any) -> Tensor:
        target, ignore = extra["target"], extra.get("ignore_index", 255)
        p = student.float().softmax(1)
        valid = (target != ignore).unsqueeze(1)
        onehot = F.one_hot(target.clamp(0, p.shape[1] - 1), p.shape[1]).permute(0, 3, 1, 2)
        inter = (p * onehot * valid).sum((0, 2, 3))
        total = ((p + onehot) * valid).sum((0, 2, 3))
        return 1 - ((2 * inter + 1) / (total + 1)).mean()


@pytest.fixture(autouse=True)
def _registered():
    """Registered for these tests only (other test files check the list of segkd's losses)."""
    LOSSES.register("test_bn_std", obj=TeacherBNStandardised)
    LOSSES.register("test_dice", obj=SoftDice)
    TeacherBNStandardised.binds.clear()
    yield
    LOSSES.unregister("test_bn_std")
    LOSSES.unregister("test_dice")


BN_TERM = {"loss": "test_bn_std", "name": "bnstd", "weight": 0.5, "student": FEAT,
           "student_hook": "input", "teacher": FEAT, "teacher_hook": "input",
           "options": {"bn": BN, "eps": 0.01}}


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_loss_needing_the_teachers_batchnorm_trains_end_to_end(tmp_path, tiny, teacher_ckpt):
    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)},
               stages=[{"name": "s", "epochs": 1, "terms": [{"loss": "ce"}, BN_TERM],
                        "optimizer": {"name": "adam", "lr": 1e-3}}])
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    eng.run()
    d = eng.distiller
    loss, bn = d.losses["bnstd"], get_module(d.teacher, BN)
    assert isinstance(loss, TeacherBNStandardised) and loss.eps == 0.01  # options, less wiring
    assert torch.equal(loss.shift.flatten(), bn.bias.detach())  # bound to the teacher's BN
    assert torch.equal(loss.scale.flatten(), bn.weight.detach().abs().clamp(min=0.01))
    term = TeacherBNStandardised.binds[-1]  # the resolved term itself, wiring in its options
    assert (term.name, term.teacher, term.teacher_hook, term.options) == ("bnstd", FEAT, "input", {"bn": BN, "eps": 0.01})
    assert d.teacher_positions() == [(FEAT, "input")]  # ce reads no teacher
    values = [r["train/loss/bnstd"] for r in _rows(tmp_path / "r") if "train/loss/bnstd" in r]
    assert values and all(0 < v < 1e6 for v in values)


def test_a_labels_only_loss_reads_no_teacher_and_needs_labels(tmp_path, tiny, teacher_ckpt):
    term = {"loss": "test_dice", "weight": 1.0}  # teacher: logits by default, ignored
    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)},
               stages=[{"name": "s", "epochs": 1, "terms": [term, BN_TERM],
                        "optimizer": {"name": "adam", "lr": 1e-3}}])
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    eng.run()
    assert [t.teacher for t in eng.distiller.terms] == [None, FEAT]
    assert eng.distiller.teacher_positions() == [(FEAT, "input")]
    assert any("train/loss/test_dice" in r for r in _rows(tmp_path / "r"))
    # no teacher at all: the labels-only loss alone is a supervised run
    alone = tiny(stages=[{"name": "s", "epochs": 1, "terms": [term],
                          "optimizer": {"name": "adam", "lr": 1e-3}}])
    Engine(config_from_dict(alone), tmp_path / "a").run()
    unlabeled = tiny(stages=[{"name": "u", "epochs": 1, "data": "images", "terms": [term],
                              "optimizer": {"name": "adam", "lr": 1e-3}}])
    with pytest.raises(ConfigError, match="'test_dice'.*needs labels"):
        Engine(config_from_dict(unlabeled), tmp_path / "u").run()


def _distiller(teacher: bool = True) -> Distiller:
    from segkd.models import create_model

    student = create_model("unet", encoder="kd_resnet10", num_classes=4)
    t = create_model("unet", encoder="kd_resnet14", num_classes=4) if teacher else None
    for m in t.modules() if t is not None else []:  # BatchNorms that differ from each other
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.normal_(0, 1)
            m.bias.data.normal_(0, 1)
    return Distiller(student, t)


@pytest.mark.parametrize("term, message", [
    (Term(name="bnstd", loss="test_bn_std", options={"bn": BN}), "reads features"),  # logits
    (Term(name="ofd", loss="ofd"), "reads features"),
    (Term(name="kd", loss="kd", teacher=None), "reads the teacher"),
    (Term(name="kd2", loss="kd", student=["logits"], teacher=["logits"]), "one tensor per side"),
])
def test_the_contract_refuses_wrong_wiring_at_build_time(term: Term, message: str) -> None:
    with pytest.raises(ConfigError, match=f"term '{term.name}'.*{message}"):
        _distiller().configure([term], torch.zeros(2, 3, 32, 32))


def test_contract_defaults_and_declared_values() -> None:
    """A plain nn.Module registered as a loss gets the defaults; segkd's own declare theirs."""
    plain = contract_of("plain", nn.Identity)
    assert (plain.needs_teacher, plain.needs_target, plain.inputs, plain.wiring) == (True, False, "any", ())
    ce, ofd = contract_of("ce"), contract_of("ofd")
    assert (ce.needs_teacher, ce.needs_target) == (False, True)
    assert (ofd.inputs, ofd.wiring) == ("features", ("margin_bn",))
    assert contract_of("ofd").split_options({"margin_bn": "a.bn1", "x": 1}) == ({"x": 1}, {"margin_bn": "a.bn1"})
    logits_only = contract_of("lo", type("LogitsOnly", (Loss,), {"inputs": "logits"}))
    assert logits_only.resolve(Term(loss="lo")).name == "lo"  # unnamed: the loss's name
    with pytest.raises(ConfigError, match="term 'lo'.*reads logits only"):
        logits_only.resolve(Term(loss="lo", teacher="encoder.model.layer3"))
    bad = type("Bad", (Loss,), {"inputs": "pixels"})
    with pytest.raises(ConfigError, match="inputs='pixels'"):
        contract_of("bad", bad)


def test_ofd_margin_bn_wiring_picks_the_named_batchnorm() -> None:
    """OFD's own setup, through the same contract: ``margin_bn`` names the BatchNorm explicitly,
    else the one before the teacher position is found."""
    from segkd.distill.losses import ofd_margin

    d = _distiller()
    other = "encoder.model.layer3.0.bn1"
    terms = [Term(name="o1", loss="ofd", student=FEAT, teacher=FEAT, student_hook="input", teacher_hook="input"),
             Term(name="o2", loss="ofd", student=FEAT, teacher=FEAT, student_hook="input", teacher_hook="input",
                  options={"margin_bn": other})]
    d.configure(terms, torch.zeros(2, 3, 32, 32))
    for name, path in (("o1", BN), ("o2", other)):
        bn = get_module(d.teacher, path)
        assert torch.equal(d.losses[name].margin, ofd_margin(bn.weight, bn.bias)), name
