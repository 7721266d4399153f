"""Plug and Play as the original (SPEC section 2, issue 14 points 1-4): frozen parts run like the
eval-mode teacher, only the replaced convs train, the seed's plateau threshold, one optimizer
across an incremental plan."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import interrupt_at_epoch

from segkd.config.schema import SchedCfg, StageCfg, config_from_dict, load_config
from segkd.core.checkpoint import load_checkpoint
from segkd.distill.distiller import Distiller, Term
from segkd.engine import Engine
from segkd.engine.plan import stage_trainable
from segkd.models.cheap import CheapBlock

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PNP = sorted((CONFIGS / "cityscapes").glob("pnp_*.yaml")) + [CONFIGS / "camvid" / "pnp.yaml"]


def _hint(module: str) -> dict:
    return {"loss": "mse", "name": f"hint_{module.split('.')[-1]}", "weight": 1000,
            "student": module, "teacher": module, "connector": "none"}


def _fast_deepwv3plus(num_classes: int = 4) -> torch.nn.Module:
    """DeepWV3Plus (137M parameters) without the slow default init: small random weights, BN
    statistics (0, 1). Its Dropout2d in mod6/mod7 is what point 1 is about."""
    from segkd.models import create_model

    with torch.device("meta"):
        model = create_model("deepwv3plus", num_classes=num_classes)
    model.to_empty(device="cpu")
    for p in model.parameters():
        p.data.normal_(0.0, 0.02)
    for name, b in model.named_buffers():
        b.fill_(1 if name.endswith("running_var") else 0)
    return model.eval()


@pytest.fixture(scope="module")
def wv3():
    return _fast_deepwv3plus()


# ------------------------------------------------------------------ 1. frozen parts in eval mode
def test_unchanged_deepwv3plus_copy_has_zero_hint_loss_in_training(wv3):
    """mod6/mod7 (Dropout2d 0.3/0.5) are copied unchanged and frozen; only an ASPP conv after
    them is replaced and trains: their hint losses must be exactly 0 in training mode (before the
    fix Dropout2d ran in the student only: 7e-5 / 2e-4 here, 0.07-0.11 with the real weights)."""
    student = copy.deepcopy(wv3)
    stage = StageCfg(trainable=[], replace=[{"paths": ["aspp.features.1.0"]}])
    from segkd.models.spec import apply_replacements

    recs = apply_replacements(student, [{"paths": ["aspp.features.1.0"], "block": "dwsep",
                                         "options": {"kernel_size": 3}}])
    reps = [{"paths": [r["path"] for r in recs], "stage": 0}]
    stage_trainable(student, stage, 0, reps)
    d = Distiller(student, wv3)
    d.configure([Term(name=m, loss="mse", weight=1000, student=m, teacher=m, connector=None)
                 for m in ("mod6", "mod7", "aspp")], torch.zeros(2, 3, 32, 32))
    d.refresh_frozen()
    d.train()
    assert student.mod7.block1.convs.dropout.training is False
    assert student.aspp.features[1][0].training is True  # the replaced block trains
    out = d(torch.randn(2, 3, 32, 32))
    assert out["loss/mod6"].item() == 0.0 and out["loss/mod7"].item() == 0.0
    assert out["loss/aspp"].item() > 0  # the replaced conv does differ
    out["loss"].backward()  # a training step reaches the replaced block only
    assert all(p.grad is None for n, p in student.named_parameters() if not n.startswith("aspp.features.1.0"))


def test_frozen_copy_through_the_engine_has_zero_hint_loss(tmp_path, tiny):
    """Plug and Play through the engine: a teacher with Dropout (DeepLabV3+ ASPP and decoder),
    the student its copy with one decoder conv replaced; the hint at the unchanged ASPP is 0."""
    ofd = {"arch": "deeplabv3plus_ofd", "encoder": "resnet18", "output_stride": 16}
    stage = {"name": "pnp", "epochs": 1, "iters_per_epoch": 1, "data": "images", "trainable": [],
             "replace": [{"paths": ["decoder.last_conv.4"], "options": {"kernel_size": 3}}],
             "terms": [_hint("aspp"), _hint("decoder")], "optimizer": {"name": "radam", "lr": 5e-3}}
    raw = tiny(model={"from_teacher": True}, teacher={"model": ofd}, stages=[stage],
               data={"batch_size": 2}, eval={"splits": []})
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    eng.run()
    row = next(r for r in eng.history if "train/loss/hint_aspp" in r)
    assert row["train/loss/hint_aspp"] == 0.0 and row["train/loss/hint_decoder"] > 0


def test_frozen_mode_train_keeps_the_whole_student_training():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Conv2d(4, 4, 1)))
    model[0].requires_grad_(False)
    model[1].requires_grad_(False)
    d = Distiller(model)
    d.refresh_frozen()
    d.train()
    assert [m.training for m in model] == [False, False, True] and model[2][0].training
    model[2].requires_grad_(False)
    d.refresh_frozen()
    assert not any(m.training for m in model.modules())  # nothing trains: all eval
    d.refresh_frozen(frozen_eval=False)
    assert all(m.training for m in model.modules())


# ------------------------------------------------------------------ 2. only replaced convs train
def test_pnp_recipes_train_only_the_replaced_convs(wv3):
    """pnp_79m_allatonce on the real DeepWV3Plus: the trainable parameters are exactly those of
    the cheap blocks (before: every parameter of mod4, mod5 and aspp)."""
    cfg = load_config(CONFIGS / "cityscapes" / "pnp_79m_allatonce.yaml")
    stage = cfg.stages[0]
    student = copy.deepcopy(wv3)
    from segkd.models.spec import apply_replacements

    reps = []
    for r in stage.replace:
        recs = apply_replacements(student, [r.model_dump()])
        reps.append({"paths": [x["path"] for x in recs], "stage": 0})
    stage_trainable(student, stage, 0, reps)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    cheap = {f"{path}.{n}" for path, m in student.named_modules() if isinstance(m, CheapBlock)
             for n, _ in m.named_parameters()}
    assert trainable == cheap and len(reps[0]["paths"]) == 15  # 6 mod4, 6 mod5, 3 aspp


@pytest.mark.parametrize("path", PNP, ids=lambda p: p.stem)
def test_pnp_recipes_declare_no_wider_unfreezing(path):
    cfg = load_config(path)
    for stage in cfg.stages:
        assert stage.trainable == [] and stage.train_replaced, stage.name
        assert (stage.schedule.threshold, stage.schedule.threshold_mode) == (0.01, "rel")


def test_teacher_blocks_are_not_trained_by_default():
    """Replacement records without a stage (the teacher's own cheap blocks) stay frozen."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3))
    reps = [{"paths": ["0"]}, {"paths": ["1"], "stage": 1}]
    assert stage_trainable(model, StageCfg(trainable=[]), 0, reps) == 0
    assert stage_trainable(model, StageCfg(trainable=[]), 1, reps) == 2
    assert stage_trainable(model, StageCfg(trainable=[], train_replaced=False), 1, reps) == 0


# ------------------------------------------------------------------ 3. plateau threshold
def _plateau_lrs(cfg: SchedCfg, losses: list[float]) -> list[float]:
    from segkd.engine.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, when = build_scheduler(opt, cfg, 1, 1.0)
    assert when == "plateau"
    out = []
    for v in losses:
        sched.step(v)
        out.append(opt.param_groups[0]["lr"])
    return out


def _plateau_rule(losses: list[float], threshold: float, mode: str, cooldown: int,
                  factor: float = 0.5, patience: int = 0) -> list[float]:
    """Reduce-on-plateau as the seed uses it (mode min), written out: an epoch is better when its
    loss is below best x (1 - threshold) (rel) or best - threshold (abs); a bad epoch past the
    patience multiplies the lr by ``factor``; for ``cooldown`` epochs after a reduction bad
    epochs are not counted."""
    lr, best, bad, cool, out = 1.0, float("inf"), 0, 0, []
    for v in losses:
        limit = best * (1 - threshold) if mode == "rel" else best - threshold
        if v < limit:
            best, bad = v, 0
        else:
            bad += 1
        if cool > 0:
            cool, bad = cool - 1, 0
        if bad > patience:
            lr, cool, bad = lr * factor, cooldown, 0
        out.append(lr)
    return out


def test_plateau_threshold_mode_and_cooldown_reach_torch():
    from segkd.engine.optim import build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = SchedCfg(name="plateau", threshold=0.01, threshold_mode="abs", cooldown=2)
    sched, _ = build_scheduler(opt, cfg, 1, 1.0)
    assert (sched.threshold, sched.threshold_mode, sched.cooldown) == (0.01, "abs", 2)
    losses = [1.0, 0.995, 0.99, 0.985, 0.98, 0.97, 0.969, 0.95, 0.95, 0.9]
    # torch's default 1e-4: each 0.5% improvement counts, the lr drops once
    assert _plateau_lrs(SchedCfg(name="plateau"), losses) == _plateau_rule(losses, 1e-4, "rel", 0)
    assert _plateau_lrs(SchedCfg(name="plateau"), losses)[-1] == 0.5
    # the seed's 0.01 relative: improvements under 1% are bad epochs
    seed = _plateau_lrs(SchedCfg(name="plateau", threshold=0.01, threshold_mode="rel"), losses)
    assert seed == _plateau_rule(losses, 0.01, "rel", 0) and seed[-1] == 1 / 32
    for thr, mode, cool in [(0.01, "rel", 1), (0.01, "rel", 2), (0.004, "abs", 0), (0.004, "abs", 1)]:
        cfg = SchedCfg(name="plateau", threshold=thr, threshold_mode=mode, cooldown=cool)
        assert _plateau_lrs(cfg, losses) == _plateau_rule(losses, thr, mode, cool), (thr, mode, cool)
    assert _plateau_rule(losses, 0.01, "rel", 1) != seed  # the cooldown changes the sequence


# ------------------------------------------------------------------ 4. one optimizer per plan
def _incremental(tiny, teacher_ckpt, s1_over: dict | None = None, **s2_over):
    s1 = {"name": "replace-layer3", "epochs": 2, "iters_per_epoch": 2, "data": "images",
          "replace": [{"paths": ["encoder.model.layer3.*.conv2"], "options": {"kernel_size": 3}}],
          "trainable": [], "terms": [_hint("encoder.model.layer3")],
          "optimizer": {"name": "radam", "lr": 5e-3},
          # threshold 0.99: the second epoch is never 99% better, so the lr is halved once
          "schedule": {"name": "plateau", "threshold": 0.99, "threshold_mode": "rel"},
          **(s1_over or {})}
    s2 = {**s1, "trainable": [], "name": "replace-layer4",
          "replace": [{"paths": ["encoder.model.layer4.*.conv2"], "options": {"kernel_size": 3}}],
          "terms": [_hint("encoder.model.layer4")],
          "optimizer": {"name": "radam", "lr": 5e-3, "continue_previous": True}, **s2_over}
    return tiny(name="pnp-inc", model={"from_teacher": True}, stages=[s1, s2],
                teacher={"checkpoint": str(teacher_ckpt)}, eval={"splits": []})


def test_incremental_plan_keeps_one_optimizer_and_adds_a_group(tmp_path, tiny, teacher_ckpt, monkeypatch):
    seen = []
    orig = Engine._setup_stage

    def record(self, si, stage):
        module, opt = orig(self, si, stage)
        raw = self._opt
        seen.append({"opt": raw, "lrs": [g["lr"] for g in raw.param_groups],
                     "steps": [float(raw.state[g["params"][0]]["step"]) if g["params"][0] in raw.state
                               else 0.0 for g in raw.param_groups],
                     "sizes": [len(g["params"]) for g in raw.param_groups],
                     "cheap4": {id(p) for n, p in self.distiller.student.named_parameters()
                                if n.startswith("encoder.model.layer4") and p.requires_grad}})
        return module, opt

    monkeypatch.setattr(Engine, "_setup_stage", record)
    Engine(config_from_dict(_incremental(tiny, teacher_ckpt)), tmp_path / "r").run()
    first, second = seen
    assert second["opt"] is first["opt"] and len(second["lrs"]) == 2
    assert first["lrs"] == [5e-3]
    assert second["lrs"] == [2.5e-3, 5e-3]  # group 0 kept its halved lr, group 1 starts at lr
    assert second["steps"] == [4.0, 0.0]  # group 0 kept its RAdam state (2 epochs x 2 steps)
    assert second["sizes"][0] == first["sizes"][0]
    assert {id(p) for p in second["opt"].param_groups[1]["params"]} == second["cheap4"]


@pytest.mark.parametrize("wider", [False, True], ids=["replaced-only", "wider-unfreezing"])
def test_incremental_plan_resumes_exactly(tmp_path, tiny, teacher_ckpt, monkeypatch, wider):
    """Resume inside stage 2 rebuilds the optimizer group by group. ``wider``: stage 1 also
    trains layer4, whose conv2s stage 2 replaces (they leave group 0; rebuilt on the resumed
    model, which already holds their cheap blocks, group 0 must not take those)."""
    raw = _incremental(tiny, teacher_ckpt, s1_over={"trainable": ["encoder.model.layer4"]} if wider else None)
    Engine(config_from_dict(raw), tmp_path / "a").run()
    interrupt_at_epoch(monkeypatch, raw, tmp_path / "b", 4)  # stage 2, epoch 2
    assert len(load_checkpoint(tmp_path / "b" / "last.pt")["optimizer"]["param_groups"]) == 2
    Engine(config_from_dict(raw), tmp_path / "b", resume=True).run()
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("a", "b"))
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == \
        [g["lr"] for g in b["optimizer"]["param_groups"]]


def test_continue_previous_needs_the_same_optimizer(tmp_path, tiny, teacher_ckpt):
    from segkd.core.errors import ConfigError

    raw = _incremental(tiny, teacher_ckpt, optimizer={"name": "adam", "continue_previous": True})
    with pytest.raises(ConfigError, match="continue_previous"):
        Engine(config_from_dict(raw), tmp_path / "x").run()
