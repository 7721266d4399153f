"""A resumed distillation uses the teacher it started with: a teacher file replaced between the
interrupted run and --resume is refused (two teachers would be mixed into one student)."""
from __future__ import annotations

import shutil

import pytest

from segkd.config.schema import config_from_dict
from segkd.core.errors import CheckpointError
from segkd.engine import Engine


def _interrupted(tmp_path, tiny, teacher, monkeypatch):
    raw = tiny(teacher={"checkpoint": str(teacher)},
               stages=[{"name": "train", "epochs": 2, "optimizer": {"name": "adam", "lr": 1e-3},
                        "terms": [{"loss": "ce"}, {"loss": "kd"}]}])
    calls = {"n": 0}
    orig = Engine._epoch

    def crash_on_second(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(Engine, "_epoch", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        Engine(config_from_dict(raw), tmp_path / "run").run()
    monkeypatch.setattr(Engine, "_epoch", orig)
    return raw


def test_resume_refuses_a_replaced_teacher(tmp_path, tiny, teacher_ckpt, monkeypatch):
    teacher = tmp_path / "teacher.pt"
    shutil.copy(teacher_ckpt, teacher)
    raw = _interrupted(tmp_path, tiny, teacher, monkeypatch)
    other = config_from_dict(tiny(name="other", seed=5, model={"encoder": "kd_resnet14"}))
    Engine(other, tmp_path / "other").run()
    shutil.copy(tmp_path / "other" / "best.pt", teacher)  # replaced between the two runs
    shutil.copy(tmp_path / "other" / "best.pt.sha256", str(teacher) + ".sha256")
    with pytest.raises(CheckpointError, match="is not the one this run started with"):
        Engine(config_from_dict(raw), tmp_path / "run", resume=True).run()
    assert not (tmp_path / "run" / "summary.json").exists()
    shutil.copy(teacher_ckpt, teacher)  # the original back: the run resumes and finishes
    shutil.copy(str(teacher_ckpt) + ".sha256", str(teacher) + ".sha256")
    Engine(config_from_dict(raw), tmp_path / "run", resume=True).run()
    assert (tmp_path / "run" / "summary.json").is_file()
