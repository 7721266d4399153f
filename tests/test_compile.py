"""`trainer.compile: true` (torch.compile of the student) trains, with logit and feature terms.

Compilation takes over a minute per run on 2 CPU cores, so this is opt-in:
``SEGKD_COMPILE_TESTS=1 python -m pytest -q tests/test_compile.py`` (about 80 s here).
"""
from __future__ import annotations

import os

import pytest

from segkd.config import config_from_dict

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
    eng = Engine(config_from_dict(raw), tmp_path / "run")
    eng.run()
    last = eng.history[-1]
    assert all(last[f"train/loss/{k}"] > 0 for k in ("ce", "kd", "at"))
    assert (tmp_path / "run" / "best.pt").is_file()
