"""Multi-stage resume: kill -9 in the middle of stage 2 of a distillation with connectors (one
of them only used in stage 1), an OFD term and a convolution replaced at stage 2's start; the
resumed run must equal the uninterrupted one bit for bit (weights, connectors, metrics).
Connectors are loaded strictly: a renamed key is refused, not left at random weights."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.core.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_then_kill, step_rows  # noqa: E402
from test_errors import cli, write_config  # noqa: E402

S1_ITERS, S2_ITERS = 3, 6
OFD = {"loss": "ofd", "name": "ofd1", "weight": 1e-3, "student": "encoder.model.layer1.0.act2",
       "student_hook": "input", "teacher": "encoder.model.layer1.0.act2", "teacher_hook": "input",
       "connector": "conv1x1_bn"}
HINT = {"loss": "mse", "name": "hint2", "student": "encoder.model.layer2.0.act2",  # stage 1 only
        "teacher": "encoder.model.layer2.0.act2", "connector": "conv1x1"}
STAGES = [
    {"name": "connectors", "epochs": 1, "iters_per_epoch": S1_ITERS, "trainable": [],
     "terms": [OFD, HINT], "optimizer": {"name": "adam", "lr": 1e-3}},
    {"name": "train", "epochs": 3, "iters_per_epoch": S2_ITERS,
     "replace": [{"paths": ["encoder.model.layer3.0.conv1"], "block": "dwsep"}],
     "terms": [{"loss": "ce"}, OFD, {"loss": "kd", "weight": 0.5}],
     "optimizer": {"name": "adam", "lr": 1e-3}, "schedule": {"name": "onecycle", "max_lr": 1e-3}},
]
TIMING = ("train/images_per_s", "train/data_wait")  # wall-clock measurements, not results


@pytest.fixture(scope="module")
def reference(tmp_path_factory, teacher_ckpt) -> tuple[Path, Path]:
    """(config, run dir) of the uninterrupted two-stage run."""
    tmp = tmp_path_factory.mktemp("multistage")
    cfg = write_config(tmp / "cfg.yaml", stages=STAGES, teacher={"checkpoint": str(teacher_ckpt)})
    proc = cli("distill", str(cfg), "--run-dir", str(tmp / "ref"), timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cfg, tmp / "ref"


def _kill_in_stage_2_epoch_2(cfg: Path, run: Path, timeout: float = 400) -> None:
    """Kill -9 two steps into stage 2's second epoch (its first epoch is checkpointed)."""
    run_then_kill(["distill", str(cfg)], run, lambda: step_rows(run) >= S1_ITERS + S2_ITERS + 2,
                  timeout, "stage 2")


def _history(run: Path) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING}
            for h in load_checkpoint(run / "last.pt")["history"]]


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), (what, k)


def test_kill_9_in_stage_2_then_resume_is_bit_identical(tmp_path, reference):
    cfg, ref = reference
    run = tmp_path / "run"
    _kill_in_stage_2_epoch_2(cfg, run)
    assert not (run / "summary.json").exists()
    killed = load_checkpoint(run / "last.pt")
    assert killed["progress"]["stage"] == 1 and 1 <= killed["progress"]["epoch"] < 3
    assert {k.split(".")[0] for k in killed["connectors"]} == {"ofd1", "hint2"}

    proc = cli("distill", str(cfg), "--resume", str(run), timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((r / "summary.json").read_text()) for r in (ref, run))
    assert b["splits"] == a["splits"] and b["replacements"] == a["replacements"]
    assert _history(run) == _history(ref)  # every epoch's losses and validation metrics
    for name in ("last.pt", "best.pt"):
        _assert_same_tensors(load_checkpoint(ref / name)["state_dict"],
                             load_checkpoint(run / name)["state_dict"], name)
    _assert_same_tensors(load_checkpoint(ref / "last.pt")["connectors"],
                         load_checkpoint(run / "last.pt")["connectors"], "connectors")


@pytest.mark.parametrize("change", ["renamed", "missing"])
def test_resume_refuses_connectors_that_do_not_match(tmp_path, reference, change):
    from segkd.config.schema import load_config
    from segkd.engine import Engine

    cfg, ref = reference
    ck = load_checkpoint(ref / "last.pt")
    conn = dict(ck["connectors"])
    key = next(k for k in conn if k.startswith("ofd1.") and k.endswith("weight"))
    value = conn.pop(key)
    if change == "renamed":
        conn[key.replace("ofd1.", "ofd9.")] = value
    ck["connectors"] = conn
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(ck, run / "last.pt")
    threads = torch.get_num_threads()
    try:
        with pytest.raises(CheckpointError, match=rf"\(connectors\) does not match.*{key}"):
            Engine(load_config(cfg), run, resume=True).run()
    finally:
        torch.set_num_threads(threads)
