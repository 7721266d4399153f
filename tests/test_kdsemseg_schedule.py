"""The kdsemseg recipes optimise as the seed does: per stage a fresh
``torch.optim.Adam(params, lr=1e-4)`` under
``torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, steps_per_epoch=len(loader), epochs=E)``
(every other argument torch's default), stepped once per batch. Transcribed from the seed's
trainer (stagewise, traditional, simultaneous and pretrain arms); compared step by step on the
learning rate and Adam's beta1, for every stage of every recipe and of every study arm that runs
them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from segkd.config.schema import StageCfg, load_config
from segkd.engine.optim import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT / "configs" / "camvid"
RECIPES = sorted([*CAMVID.glob("stagewise*.yaml"), CAMVID / "traditional.yaml",
                  CAMVID / "simultaneous.yaml", *CAMVID.glob("unet_r*_scratch.yaml"),
                  CAMVID / "scratch_quarter.yaml"])
STUDIES = ["kdsemseg_tables.yaml", "camvid_stagewise_cpu.yaml", "camvid_scratch_cpu.yaml",
           "camvid_kdsemseg_small.yaml"]
ITERS = 3  # batches per epoch in the comparison (any count: the schedule is per step)


def seed_schedule(epochs: int, iters: int) -> list[tuple[float, float]]:
    """(lr, beta1) at every step of the seed's optimiser, before each update."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, steps_per_epoch=iters,
                                                epochs=epochs)
    return _trace(opt, sched, epochs * iters)


def segkd_schedule(stage: StageCfg, iters: int) -> list[tuple[float, float]]:
    """The same trace for segkd's optimiser and schedule of one stage."""
    opt = build_optimizer(nn.Linear(1, 1), stage.optimizer)
    sched, when = build_scheduler(opt, stage.schedule, stage.epochs * iters, stage.optimizer.lr)
    assert when == "iter"
    return _trace(opt, sched, stage.epochs * iters)


def _trace(opt: torch.optim.Optimizer, sched, steps: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(steps):
        g = opt.param_groups[0]
        out.append((g["lr"], g["betas"][0]))
        opt.step()
        sched.step()
    return out


def _check(cfg, where: str) -> None:
    assert cfg.trainer.grad_accum == 1, where
    for stage in cfg.stages:
        o = stage.optimizer
        # betas: torch's (0.9, 0.999) when not set (the built optimizer's are checked below)
        assert (o.name, o.weight_decay, tuple(o.betas or (0.9, 0.999))) == ("adam", 0.0, (0.9, 0.999)), where
        got, want = segkd_schedule(stage, ITERS), seed_schedule(stage.epochs, ITERS)
        assert len(got) == len(want)
        for step, (g, w) in enumerate(zip(got, want)):
            assert g == pytest.approx(w, rel=1e-12, abs=0), f"{where} {stage.name} step {step}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_schedule_is_the_seeds(path: Path) -> None:
    _check(load_config(path), path.name)


@pytest.mark.parametrize("name", STUDIES)
def test_study_arms_keep_the_seeds_schedule(name: str, monkeypatch) -> None:
    """Study overrides (epochs, resolution, threads) leave the optimiser and schedule alone;
    one arm per method (the arms of a method differ only in student, seed and fraction)."""
    from segkd.apps.study import load_spec, plan_arms

    path = ROOT / "configs" / "studies" / name
    assert path.is_file(), f"{path} is missing: update STUDIES when a study spec is renamed"
    monkeypatch.chdir(ROOT)
    arms = plan_arms(load_spec(path), Path("teacher.pt"))
    first = {a.method: a for a in reversed(arms)}
    assert first
    for method, arm in first.items():
        _check(load_config(arm.config, arm.overrides), f"{name}:{method}")


def test_kdsemseg_tables_teacher_uses_the_seeds_schedule(monkeypatch) -> None:
    """The GPU study at the seed's budget trains its teacher with the seed's optimiser too."""
    from segkd.apps.study import load_spec, teacher_arm

    monkeypatch.chdir(ROOT)
    arm = teacher_arm(load_spec(ROOT / "configs" / "studies" / "kdsemseg_tables.yaml"))
    _check(load_config(arm.config, arm.overrides), "kdsemseg_tables:teacher")


def test_schedule_cycles_beta1_and_warms_up_30_percent() -> None:
    """The transcription itself: starts at max_lr/25 with beta1 0.95, peaks at 30% of the
    steps (beta1 0.85), ends near max_lr/25/1e4 with beta1 back at 0.95."""
    trace = seed_schedule(10, 10)
    lrs = [lr for lr, _ in trace]
    assert lrs[0] == pytest.approx(4e-4) and trace[0][1] == pytest.approx(0.95)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak == 29 and trace[peak][1] == pytest.approx(0.85)
    assert trace[-1][1] == pytest.approx(0.95, abs=1e-3) and lrs[-1] < 1e-6


CPU_PROTOCOL = ["baseline", "kd", "at", "fitnet", "cwd", "dist", "ofd", "combo", "skd"]


@pytest.mark.parametrize("name", CPU_PROTOCOL)
def test_camvid_cpu_recipes_keep_their_own_schedule(name: str) -> None:
    """The camvid-cpu protocol's recipes (not kdsemseg's) keep Adam 1e-3 + one-cycle max 1e-3
    with a 10% warm-up and a constant beta1, whatever the schedule defaults are (an OFD
    connector-only stage, if any, is not a one-cycle stage and is left out)."""
    stages = [s for s in load_config(CAMVID / f"{name}.yaml").stages
              if s.schedule.name == "onecycle"]
    assert stages, name
    for stage in stages:
        o, s = stage.optimizer, stage.schedule
        assert (o.name, o.lr, o.weight_decay) == ("adam", 1e-3, 1e-4), name
        assert (s.name, s.max_lr, s.pct_start, s.cycle_momentum) == ("onecycle", 1e-3, 0.1, False)


def test_onecycle_warmup_default_is_torchs() -> None:
    """`schedule: {name: onecycle}` without pct_start warms up as torch's OneCycleLR does."""
    import inspect

    from segkd.config.schema import SchedCfg

    torch_default = inspect.signature(torch.optim.lr_scheduler.OneCycleLR).parameters["pct_start"]
    assert SchedCfg(name="onecycle").pct_start == torch_default.default == 0.3
