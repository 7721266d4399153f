"""The engine: run directory contents, exact resume, distillation wiring, frozen teacher."""
from __future__ import annotations

import json

import pytest
import torch

from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint
from segkd.engine import Engine


def test_supervised_run_writes_run_directory(tmp_path, tiny):
    cfg = config_from_dict(tiny())
    summary = Engine(cfg, tmp_path / "r").run()
    r = tmp_path / "r"
    for f in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "train_files.txt"):
        assert (r / f).is_file(), f
    assert any((r / "tb").iterdir())
    assert 0.0 <= summary["splits"]["val"]["mIoU"] <= 1.0
    assert len(summary["splits"]["val"]["per_class_iou"]) == 4
    assert "per_image_iou" in summary["splits"]["val"]
    rows = [json.loads(l) for l in (r / "metrics.jsonl").read_text().splitlines()]
    assert any("val/mIoU" in row for row in rows)
    last = load_checkpoint(r / "last.pt")
    assert last["progress"]["stage"] == 0 and last["progress"]["epoch"] == 1
    assert {"optimizer", "scheduler", "rng", "config", "state_dict"} <= set(last)


def _state(run):
    return load_checkpoint(run / "last.pt")["state_dict"]


def test_resume_after_interruption_matches_uninterrupted(tmp_path, tiny, monkeypatch):
    raw = tiny(stages=[{"name": "train", "epochs": 3, "terms": [{"loss": "ce"}],
                        "optimizer": {"name": "adam", "lr": 1e-3},
                        "schedule": {"name": "onecycle", "max_lr": 1e-3}}])
    full = Engine(config_from_dict(raw), tmp_path / "a").run()

    calls = {"n": 0}
    orig = Engine._epoch

    def crash_on_second(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # "killed" during epoch 2
        return orig(self, *a, **k)

    monkeypatch.setattr(Engine, "_epoch", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        Engine(config_from_dict(raw), tmp_path / "b").run()
    monkeypatch.setattr(Engine, "_epoch", orig)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["progress"]["epoch"] == 1
    resumed = Engine(config_from_dict(raw), tmp_path / "b", resume=True).run()
    assert resumed["splits"]["val"]["mIoU"] == pytest.approx(full["splits"]["val"]["mIoU"], abs=1e-9)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_distillation_keeps_teacher_frozen_and_out_of_checkpoints(tmp_path, tiny, teacher_ckpt):
    from segkd.models.spec import model_from_checkpoint

    raw = tiny(name="kd", teacher={"checkpoint": str(teacher_ckpt)},
               stages=[{"name": "kd", "epochs": 1, "terms": [
                   {"loss": "ce"}, {"loss": "kd", "options": {"temperature": 2.0}},
                   {"loss": "hint", "student": "encoder.model.layer2", "teacher": "encoder.model.layer3"},
                   {"loss": "at", "student": "encoder.model.layer3", "teacher": "encoder.model.layer3"}],
                   "optimizer": {"name": "sgd", "lr": 0.01}}])
    before = {k: v.clone() for k, v in model_from_checkpoint(str(teacher_ckpt))[0].state_dict().items()}
    eng = Engine(config_from_dict(raw), tmp_path / "kd")
    summary = eng.run()
    t = eng.distiller.teacher
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    for k, v in t.state_dict().items():  # weights AND BatchNorm running statistics unchanged
        assert torch.equal(v.cpu(), before[k]), k
    last = load_checkpoint(tmp_path / "kd" / "last.pt")
    assert all(not k.startswith("teacher") for k in last["state_dict"])
    assert "hint" in eng.distiller.connectors  # 128 -> 256 channels: automatic connector
    assert set(last["connectors"]) and summary["teacher"] == str(teacher_ckpt)
    rows = (tmp_path / "kd" / "metrics.jsonl").read_text()
    for term in ("ce", "kd", "hint", "at"):
        assert f"train/loss/{term}" in rows


def test_teacher_with_other_class_count_is_refused(tmp_path, tiny, teacher_ckpt):
    from segkd.core.errors import ConfigError

    raw = tiny(data={"options": {"num_classes": 3}}, teacher={"checkpoint": str(teacher_ckpt)},
               stages=[{"terms": [{"loss": "kd"}]}])
    with pytest.raises(ConfigError, match="classes"):
        Engine(config_from_dict(raw), tmp_path / "x").run()


def test_multistage_plan_freezes_and_restores_best(tmp_path, tiny, teacher_ckpt):
    stem = {"name": "stem", "epochs": 2, "trainable": ["encoder.model.conv1", "encoder.model.bn1"],
            "terms": [{"loss": "mse", "student": "encoder.model.act1", "teacher": "encoder.model.act1"}],
            "select": {"metric": "val/loss/mse", "mode": "min", "restore_best": True}}
    head = {"name": "head", "epochs": 1, "trainable": ["segmentation_head"], "terms": [{"loss": "ce"}]}
    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)}, stages=[stem, head])
    eng = Engine(config_from_dict(raw), tmp_path / "s")
    init = {k: v.clone() for k, v in eng_student_init(raw).items()}
    eng.run()
    sd = eng.distiller.student.state_dict()
    changed = {k.split(".")[0] + "." + k.split(".")[1] if k.startswith("encoder") else k.split(".")[0]
               for k in sd if not torch.equal(sd[k].cpu(), init[k])}
    # only the stem (encoder.model.conv1/bn1) and the head changed; BN stats of frozen parts did not
    assert changed <= {"encoder.model", "segmentation_head"}
    for k in sd:
        if k.startswith(("encoder.model.layer", "decoder")):
            assert torch.equal(sd[k].cpu(), init[k]), k
    hist = load_checkpoint(tmp_path / "s" / "last.pt")["history"]
    assert [h["stage"] for h in hist] == [0, 0, 1]
    assert "val/loss/mse" in hist[0]


def eng_student_init(raw):
    """The student's initial weights (same seed => same init as the engine's)."""
    from segkd.engine.state import seed_all
    from segkd.models.spec import build_from_spec, model_spec

    cfg = config_from_dict(raw)
    seed_all(cfg.seed)
    return build_from_spec(model_spec(cfg.model, 4)).state_dict()


def test_best_epoch_is_selected_by_the_configured_metric(tmp_path, tiny):
    raw = tiny(stages=[{"name": "train", "epochs": 3, "terms": [{"loss": "ce"}],
                        "optimizer": {"name": "adam", "lr": 1e-3},
                        "select": {"metric": "val/pixel_acc", "mode": "min"}}])
    Engine(config_from_dict(raw), tmp_path / "r").run()
    hist = load_checkpoint(tmp_path / "r" / "last.pt")["history"]
    worst = min(hist, key=lambda h: h["val/pixel_acc"])
    best = load_checkpoint(tmp_path / "r" / "best.pt")["selected"]
    assert best["epoch"] == worst["epoch"] and best["value"] == pytest.approx(worst["val/pixel_acc"])


def _record_epochs(monkeypatch) -> tuple[dict, dict]:
    """Snapshot the student after every epoch ``{(stage, epoch): state}`` and at the start of
    every stage, after its setup ``{stage: state}``."""
    after, start = {}, {}
    real_epoch, real_setup = Engine._epoch, Engine._setup_stage

    def snap(eng):
        return {k: v.detach().clone() for k, v in eng.distiller.student.state_dict().items()}

    def epoch(self, si, stage, ep, *a, **kw):
        real_epoch(self, si, stage, ep, *a, **kw)
        after[(si, ep + 1)] = snap(self)

    def setup(self, si, stage):
        out = real_setup(self, si, stage)
        start[si] = snap(self)
        return out

    monkeypatch.setattr(Engine, "_epoch", epoch)
    monkeypatch.setattr(Engine, "_setup_stage", setup)
    return after, start


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("restore", [True, False])
def test_stage_ends_with_the_selected_epochs_weights_and_the_next_stage_starts_there(
        tmp_path, tiny, teacher_ckpt, monkeypatch, restore):
    """Stage 1 keeps the epoch with the largest validation MSE (the first one: training lowers
    it), so the selected epoch is not the last; stage 2 must start from its weights."""
    stem = {"name": "stem", "epochs": 3, "trainable": ["encoder.model.conv1", "encoder.model.bn1"],
            "optimizer": {"name": "adam", "lr": 1e-2},
            "terms": [{"loss": "mse", "student": "encoder.model.act1", "teacher": "encoder.model.act1"}],
            "select": {"metric": "val/loss/mse", "mode": "max", "restore_best": restore}}
    head = {"name": "head", "epochs": 1, "trainable": ["segmentation_head"], "terms": [{"loss": "ce"}]}
    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)}, stages=[stem, head])
    after, start = _record_epochs(monkeypatch)
    eng = Engine(config_from_dict(raw), tmp_path / "s")
    eng.run()
    hist = [h for h in load_checkpoint(tmp_path / "s" / "last.pt")["history"] if h["stage"] == 0]
    chosen = max(hist, key=lambda h: h["val/loss/mse"])["epoch"]
    assert chosen < 3, hist  # the test needs a selected epoch that is not the last
    assert not _same(after[(0, chosen)], after[(0, 3)])
    expected = after[(0, chosen)] if restore else after[(0, 3)]
    assert _same(start[1], expected)  # the next stage starts from the selected weights
    final = eng.distiller.student.state_dict()
    stem_keys = [k for k in final if k.startswith(("encoder.model.conv1", "encoder.model.bn1"))]
    assert stem_keys and all(torch.equal(final[k], expected[k]) for k in stem_keys)  # frozen since
