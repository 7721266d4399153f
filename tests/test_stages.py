"""``segkd stages``: relative feature MSE and teacher transplants for a stagewise student."""
from __future__ import annotations

import json

import pytest
import torch

from segkd.apps.stages import plan_stages, stage_diagnosis, transplant
from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.core.errors import SegkdError
from segkd.engine import Engine
from segkd.models.spec import model_from_checkpoint

STAGES = [
    {"name": "l1", "epochs": 1, "trainable": ["encoder.model.layer1"],
     "terms": [{"loss": "mse", "student": "encoder.model.layer1", "teacher": "encoder.model.layer1",
                "connector": "none"}],
     "optimizer": {"name": "adam", "lr": 1e-2},
     "select": {"metric": "val/loss/mse", "mode": "min", "restore_best": True}},
    {"name": "l2", "epochs": 1, "trainable": ["encoder.model.layer2"],
     "terms": [{"loss": "mse", "student": "encoder.model.layer2", "teacher": "encoder.model.layer2",
                "connector": "none"}],
     "optimizer": {"name": "adam", "lr": 1e-2},
     "select": {"metric": "val/loss/mse", "mode": "min", "restore_best": True}},
    {"name": "head", "epochs": 1, "trainable": ["segmentation_head"], "terms": [{"loss": "ce"}],
     "optimizer": {"name": "adam", "lr": 1e-2}},
]


@pytest.fixture(scope="module")
def stagewise(tmp_path_factory, teacher_ckpt):
    """A tiny stagewise UNet-kd_resnet10 student of the kd_resnet14 test teacher."""
    from tests.conftest import tiny_cfg

    run = tmp_path_factory.mktemp("stagewise")
    raw = tiny_cfg(name="sw", teacher={"checkpoint": str(teacher_ckpt)}, stages=STAGES,
                   eval={"splits": []})
    Engine(config_from_dict(raw), run).run()
    return run


def _feature(model, path, images):
    got = []
    h = model.get_submodule(path).register_forward_hook(lambda m, i, o: got.append(o.detach()))
    with torch.no_grad():
        model(images)
    h.remove()
    return got[0]


def test_relative_mse_is_the_val_mse_over_the_teacher_variance(stagewise, teacher_ckpt):
    """By hand on the whole val split at once: mean squared difference of the two features and
    the teacher feature's (population) variance; MSE also equals what training logged as the
    stage's selected val/loss/mse (the frozen layer is not changed by later stages)."""
    from segkd.engine.data import build_data

    res = stage_diagnosis(str(stagewise / "best.pt"), str(teacher_ckpt))
    student, _, ckpt = model_from_checkpoint(str(stagewise / "best.pt"))
    teacher, _, _ = model_from_checkpoint(str(teacher_ckpt))
    student.eval(), teacher.eval()
    val = build_data(config_from_dict(ckpt["config"]).data).val
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    rows = {r["stage"]: r for r in res["stages"]}
    logged = [json.loads(l) for l in (stagewise / "metrics.jsonl").read_text().splitlines()]
    for name, layer in (("l1", "encoder.model.layer1"), ("l2", "encoder.model.layer2")):
        s, t = _feature(student, layer, images), _feature(teacher, layer, images)
        mse = float(((s - t) ** 2).mean())
        assert rows[name]["mse"] == pytest.approx(mse, rel=1e-4)
        assert rows[name]["rel_mse"] == pytest.approx(mse / float(t.var(unbiased=False)), rel=1e-4)
        val_mse = [r["val/loss/mse"] for r in logged if r.get("stage") == name and "val/loss/mse" in r]
        assert rows[name]["mse"] == pytest.approx(min(val_mse), rel=1e-3)
    assert rows["head"]["mse"] is None and rows["head"]["position"] is None
    assert rows["l1"]["prefix_miou"] == rows["l1"]["alone_miou"]  # the first prefix is that stage


def test_a_student_equal_to_its_teacher_has_zero_error_and_the_teachers_miou(tmp_path, teacher_ckpt):
    ckpt = load_checkpoint(teacher_ckpt)
    ckpt["config"] = {**ckpt["config"], "stages": STAGES}
    save_checkpoint(ckpt, tmp_path / "same.pt")
    res = stage_diagnosis(str(tmp_path / "same.pt"), str(teacher_ckpt))
    assert res["student_miou"] == res["teacher_miou"]
    for r in res["stages"]:
        assert r["alone_miou"] == r["prefix_miou"] == res["teacher_miou"]
        assert r["mse"] in (None, 0.0) and r["rel_mse"] in (None, 0.0)


def test_transplant_takes_only_the_named_modules_and_leaves_the_teacher_alone(stagewise, teacher_ckpt):
    student, _, _ = model_from_checkpoint(str(stagewise / "best.pt"))
    teacher, _, _ = model_from_checkpoint(str(teacher_ckpt))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    hybrid = transplant(teacher, student, ["encoder.model.layer1", "segmentation_head"])
    hs, ss = hybrid.state_dict(), student.state_dict()
    for k, v in hs.items():
        src = ss if k.startswith(("encoder.model.layer1.", "segmentation_head.")) else before
        assert torch.equal(v, src[k]), k
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    with pytest.raises(SegkdError, match="encoder.model.nope"):
        transplant(teacher, student, ["encoder.model.nope"])


def test_a_run_without_named_stages_is_refused_with_one_line(segkd, tmp_path, teacher_ckpt):
    with pytest.raises(SegkdError, match="names the modules it trains"):
        plan_stages({"stages": [{"name": "kd", "terms": [{"loss": "ce"}]}]})
    r = segkd("stages", str(teacher_ckpt), "--teacher", str(teacher_ckpt))
    assert r.returncode == 2
    assert "error:" in r.stderr and "names the modules it trains" in r.stderr


def test_cli_prints_the_table_and_writes_json(segkd, stagewise, teacher_ckpt, tmp_path):
    r = segkd("stages", str(stagewise / "best.pt"), "--teacher", str(teacher_ckpt),
              "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert "teacher + stages <= this" in r.stdout and "l2" in r.stdout
    res = json.loads((tmp_path / "s.json").read_text())
    assert [s["stage"] for s in res["stages"]] == ["l1", "l2", "head"]
