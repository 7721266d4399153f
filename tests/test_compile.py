"""`trainer.compile: true` (torch.compile of the student) trains, with logit and feature terms.

Compilation takes over a minute per run on 2 CPU cores, so this is opt-in:
``SEGKD_COMPILE_TESTS=1 python -m pytest -q tests/test_compile.py`` (about 80 s here).
"""
from __future__ import annotations

import os

import pytest

from segkd.config.schema import config_from_dict

pytestmark = pytest.mark.skipif(os.environ.get("SEGKD_COMPILE_TESTS") != "1",
                                reason="slow (torch.compile); set SEGKD_COMPILE_TESTS=1")


def test_compiled_student_distils_with_hooks(tmp_path, tiny, teacher_ckpt):
    from segkd.engine import Engine

    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)},
               trainer={"compile": True, "precision": "bf16-mixed"},
               stages=[{"name": "kd", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3},
                        "terms": [{"loss": "ce"}, {"loss": "kd"},
                                  {"loss": "at", "student": "encoder.model.layer3",
                                   "teacher": "encoder.model.layer3"}]}])
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eng = Engine(config_from_dict(raw), tmp_path / "run")
    eng.run()
    # one graph for training, one for validation: the shape probe at stage start runs eagerly
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    last = eng.history[-1]
    assert all(last[f"train/loss/{k}"] > 0 for k in ("ce", "kd", "at"))
    assert (tmp_path / "run" / "best.pt").is_file()


def test_compiled_student_through_a_two_stage_plan(tmp_path, tiny, teacher_ckpt):
    """Each stage brings new hooks and frozen parts (new guards): the run keeps compiling within
    its allowance instead of silently falling back to eager."""
    import torch._dynamo

    from segkd.engine import Engine

    opt = {"name": "adam", "lr": 1e-3}
    raw = tiny(teacher={"checkpoint": str(teacher_ckpt)}, trainer={"compile": True},
               stages=[{"name": "feat", "epochs": 1, "optimizer": opt, "trainable": ["encoder.*"],
                        "select": {"metric": "val/loss/mse", "mode": "min"},
                        "terms": [{"loss": "mse", "student": "encoder.model.layer2",
                                   "teacher": "encoder.model.layer2"}]},
                       {"name": "all", "epochs": 1, "optimizer": opt,
                        "terms": [{"loss": "ce"}, {"loss": "kd"}]}])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eng = Engine(config_from_dict(raw), tmp_path / "run")
    eng.run()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert 2 <= graphs <= 2 * 2 + 2
    assert [h["stage"] for h in eng.history] == [0, 1]
