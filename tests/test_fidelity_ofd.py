"""OFD's connector epoch as the original (SPEC section 3, issue 14 point 7): the student in train
mode while only the connectors learn, 50 epochs including that epoch, one poly schedule over all
of them; checked against a transcription of the authors' learning-rate rule."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from segkd.config.schema import StageCfg, config_from_dict, load_config
from segkd.core.errors import ConfigError
from segkd.engine import Engine
from segkd.engine.plan import schedule_span

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def heo_poly_lrs(base: float, epochs: int, iters: int, groups_per_epoch: list[int]) -> list[list[float]]:
    """The learning rates of every iteration in Heo et al.'s Segmentation/train_with_distillation.py
    (written out from its LR_Scheduler, mode poly): before each step of epoch ``e``, iteration
    ``i``, lr = base x (1 - T / N)^0.9 with T = e x iters + i and N = epochs x iters counted over
    ALL epochs, the connector epoch 0 included; the optimizer's first group gets lr, every other
    group 10 x lr. Epoch 0's optimizer holds only the connectors (one group: lr, not 10 x lr)."""
    out = []
    n = epochs * iters
    for e in range(epochs):
        for i in range(iters):
            lr = base * (1 - (e * iters + i) / n) ** 0.9
            out.append([lr] + [10 * lr] * (groups_per_epoch[e] - 1))
    return out


def _ofd_like(tiny, teacher_ckpt, epochs: int = 3) -> dict:
    terms = [{"loss": "ce"},
             {"loss": "mse", "name": "feat", "weight": 0.1, "student": "encoder.model.layer2",
              "teacher": "encoder.model.layer2", "connector": "conv1x1_bn"}]
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    poly = {"name": "poly", "power": 0.9, "across_stages": True}
    connectors = {"name": "connectors", "epochs": 1, "trainable": [], "frozen_mode": "train",
                  "terms": terms, "optimizer": sgd, "schedule": poly}
    train = {"name": "train", "epochs": epochs - 1, "terms": terms, "schedule": poly,
             "optimizer": {**sgd, "param_groups": [{"params": ["decoder.*", "segmentation_head.*",
                                                               "connectors.*"], "lr_mult": 10}]}}
    return tiny(name="ofd", teacher={"checkpoint": str(teacher_ckpt)}, stages=[connectors, train],
                eval={"splits": []})


def test_connector_epoch_and_poly_schedule_follow_the_original(tmp_path, tiny, teacher_ckpt, monkeypatch):
    raw = _ofd_like(tiny, teacher_ckpt)
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    seen: list[list[float]] = []
    bn_modes: list[set[bool]] = []

    def record(opt, args, kwargs):
        seen.append([g["lr"] for g in opt.param_groups])
        bns = [m for m in eng.distiller.student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        bn_modes.append({m.training for m in bns})

    states = {}
    orig = Engine._run_stage

    def around(self, si, stage, ckpt):
        states[(si, "before")] = {k: v.clone() for k, v in self.distiller.student.state_dict().items()}
        orig(self, si, stage, ckpt)
        states[(si, "after")] = {k: v.clone() for k, v in self.distiller.student.state_dict().items()}

    monkeypatch.setattr(Engine, "_run_stage", around)
    handle = register_optimizer_step_pre_hook(record)
    try:
        eng.run()
    finally:
        handle.remove()
    iters = 2  # 8 synthetic images, batch 4
    expected = heo_poly_lrs(0.05, 3, iters, [1, 2, 2])
    assert len(seen) == len(expected) == 6
    for got, want in zip(seen, expected):
        assert got == pytest.approx(want, rel=1e-12, abs=0)
    # epoch 0: every student BatchNorm in train mode; the student's weights do not move, its BN
    # running statistics do (they are fitted to the batches, as in the original)
    assert bn_modes[:iters] == [{True}] * iters
    before, after = states[(0, "before")], states[(0, "after")]
    weights = [k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(before[k], after[k]) for k in weights)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))


def test_schedule_across_stages_spans_the_chain():
    poly = {"name": "poly", "across_stages": True}
    stages = [StageCfg(schedule={"name": "cosine"}), StageCfg(schedule=poly), StageCfg(schedule=poly),
              StageCfg(schedule=poly), StageCfg(schedule={"name": "poly"})]
    steps = {0: 5, 1: 3, 2: 10, 3: 7, 4: 4}.__getitem__
    assert schedule_span(stages, 0, steps) == (0, 5)
    assert [schedule_span(stages, j, steps) for j in (1, 2, 3)] == [(0, 20), (3, 20), (13, 20)]
    assert schedule_span(stages, 4, steps) == (0, 4)
    stages[2] = StageCfg(schedule={"name": "cosine", "across_stages": True})
    with pytest.raises(ConfigError, match="across_stages"):
        schedule_span(stages, 1, steps)


def test_schedule_across_stages_refuses_onecycle():
    from segkd.config.schema import SchedCfg

    with pytest.raises(ConfigError, match="across_stages does not apply to schedule 'onecycle'"):
        SchedCfg(name="onecycle", across_stages=True)


@pytest.mark.parametrize("name", ["r18", "mbv2"])
def test_voc_ofd_recipes_run_fifty_epochs_with_one_schedule(name):
    cfg = load_config(CONFIGS / "voc" / name / "ofd.yaml")
    connectors, train = cfg.stages
    assert connectors.epochs + train.epochs == 50
    assert connectors.trainable == [] and connectors.frozen_mode == "train"
    assert connectors.optimizer.param_groups == []  # one group: the original's base lr
    assert train.frozen_mode == "eval" and train.trainable == ["*"]
    for s in cfg.stages:
        assert (s.schedule.name, s.schedule.power, s.schedule.across_stages) == ("poly", 0.9, True)
        assert s.optimizer.lr == connectors.optimizer.lr


@pytest.mark.parametrize("name", ["ofd", "combo"])
def test_camvid_ofd_recipes_keep_the_shared_budget(name):
    cfg = load_config(CONFIGS / "camvid" / f"{name}.yaml")
    base = load_config(CONFIGS / "camvid" / "baseline.yaml")
    assert sum(s.epochs for s in cfg.stages) == sum(s.epochs for s in base.stages)
    first, last = cfg.stages[0], cfg.stages[-1]  # the study overrides stages.-1.epochs
    assert first.trainable == [] and first.frozen_mode == "train"
    assert last.name == "train" and last.trainable == ["*"]
