"""Plug and Play through the engine: student = teacher copy with cheap convs, images only."""
from __future__ import annotations

import torch
from conftest import interrupt_at_epoch

from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint
from segkd.engine import Engine


def _pnp(tiny, teacher_ckpt, **stage_over):
    hint = {"loss": "mse", "weight": 1000, "student": "encoder.model.layer3",
            "teacher": "encoder.model.layer3", "connector": "none"}
    s1 = {"name": "replace-layer3", "epochs": 1, "iters_per_epoch": 3, "data": "images",
          "replace": [{"paths": ["encoder.model.layer3.*.conv2"], "block": "dwsep",
                       "options": {"kernel_size": 3, "dilation": 2}}],
          "trainable": ["encoder.model.layer3"], "terms": [hint],
          "optimizer": {"name": "radam", "lr": 5e-3}, "schedule": {"name": "plateau"}}
    s2 = {**s1, "name": "replace-layer4",
          "replace": [{"paths": ["encoder.model.layer4.*.conv2"], "block": "lowrank"}],
          "trainable": ["encoder.model.layer3", "encoder.model.layer4"], **stage_over}
    return tiny(name="pnp", model={"from_teacher": True}, teacher={"checkpoint": str(teacher_ckpt)},
                stages=[s1, s2])


def test_incremental_replacement_trains_on_images_and_resumes(tmp_path, tiny, teacher_ckpt, monkeypatch):
    from segkd.models.cheap import CheapBlock
    from segkd.models.spec import model_from_checkpoint

    raw = _pnp(tiny, teacher_ckpt)
    interrupt_at_epoch(monkeypatch, raw, tmp_path / "p", 2)
    ck = load_checkpoint(tmp_path / "p" / "last.pt")
    assert len(ck["replacements"]) == 1  # stage 1 replaced layer3 only
    eng = Engine(config_from_dict(raw), tmp_path / "p", resume=True)
    eng.run()
    ck = load_checkpoint(tmp_path / "p" / "last.pt")
    assert [r["block"] for r in ck["replacements"]] == ["dwsep", "lowrank"]
    student, _, _ = model_from_checkpoint(str(tmp_path / "p" / "best.pt"))
    mods = dict(student.named_modules())
    assert isinstance(mods["encoder.model.layer3.0.conv2"], CheapBlock)
    assert isinstance(mods["encoder.model.layer4.1.conv2"], CheapBlock)
    # frozen parts (outside layer3/layer4) are exactly the teacher's
    teacher = model_from_checkpoint(str(teacher_ckpt))[0].state_dict()
    sd = student.state_dict()
    for k in sd:
        if k.startswith(("decoder", "segmentation_head", "encoder.model.layer1")):
            assert torch.equal(sd[k], teacher[k]), k
    assert sum(p.numel() for p in student.parameters()) < sum(v.numel() for k, v in teacher.items()
                                                             if "running" not in k and "num_batches" not in k)


def test_automatic_plan_reaches_parameter_target(tmp_path, tiny, teacher_ckpt):
    raw = tiny(name="auto", model={"from_teacher": True}, teacher={"checkpoint": str(teacher_ckpt)},
               stages=[{"name": "auto", "epochs": 1, "iters_per_epoch": 2, "data": "images",
                        "replace": [{"target_params": 0.6, "input_size": [32, 32]}],
                        "terms": [{"loss": "kd"}], "optimizer": {"name": "radam", "lr": 1e-3}}])
    s = Engine(config_from_dict(raw), tmp_path / "a").run()
    teacher_params = load_checkpoint(teacher_ckpt)["state_dict"]
    total = sum(v.numel() for k, v in teacher_params.items() if "running" not in k and "num_batches" not in k)
    assert s["params"] <= 0.62 * total and s["replacements"]
