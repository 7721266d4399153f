"""segkd compress: the plan table, targets, the recipe, an interrupted run resumed, teachers
from other libraries, refusals (tiny synthetic data, seconds per run)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from segkd.apps.compress.plan import Target, choose, measure_all, parse_budget, parse_params
from segkd.apps.compress.recipe import MIN_STEPS, size_budget
from segkd.core.errors import SegkdError

DATA = {"data": {"name": "synthetic", "batch_size": 4, "num_workers": 0,
                 "options": {"num_images": 8, "size": [32, 32], "num_classes": 4}},
        "trainer": {"precision": "32"}}


@pytest.fixture
def data_yaml(tmp_path):
    p = tmp_path / "data.yaml"
    p.write_text(yaml.safe_dump(DATA))
    return p


def _plan(segkd, teacher, data, out, *extra):
    return segkd("compress", str(teacher), "--data", str(data), "--out", str(out), "--size", "32,32",
                 "--no-latency", *extra)


def test_plan_table_shows_every_candidate_kind(segkd, teacher_ckpt, data_yaml, tmp_path):
    r = _plan(segkd, teacher_ckpt, data_yaml, tmp_path / "c", "--params", "0.5", "--dry-run")
    assert r.returncode == 0, r.stderr
    plan = json.loads((tmp_path / "c" / "plan.json").read_text())
    kinds = {c["kind"] for c in plan["candidates"]}
    assert kinds == {"cut", "narrow", "cut+narrow", "encoder", "cheap"}
    chosen = [c for c in plan["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["meets"] and chosen[0]["kind"] in ("cut", "narrow", "cut+narrow")
    limit = plan["teacher"]["params"] * 0.5
    assert all(c["meets"] == (c["params"] <= limit) for c in plan["candidates"])
    assert "chosen" in r.stdout and "teacher cut 1-1-1-1" in r.stdout
    # the table says briefly where each starts; the chosen one's block mapping follows it
    assert "random init" in r.stdout and "teacher: blocks" in r.stdout
    assert "chosen: teacher cut" in r.stdout and "starts from teacher's blocks" in r.stdout
    assert not (tmp_path / "c" / "student.yaml").exists()  # --dry-run stops at the table


def test_a_latency_target_excludes_the_slow_candidates(monkeypatch, teacher_ckpt, tmp_path):
    """Latency measured (here: a stand-in proportional to parameters, so the test is exact)."""
    import segkd.models.cost as profile
    from segkd.apps.compress.candidates import all_candidates
    from segkd.apps.compress.teacher import load_teacher

    monkeypatch.setattr(profile, "measure_latency", lambda m, size, **kw: {
        "p50_ms": profile.count_params(m) / 1e5, "mean_ms": 0.0, "std_ms": 0.0})
    teacher = load_teacher(str(teacher_ckpt), tmp_path)
    row = {"params": profile.count_params(teacher.model), "flops": 1, "latency_ms": 1.0}
    cands, _ = all_candidates(teacher, (32, 32), None, None)
    target = Target(latency_ms=row["params"] / 2e5, size=(32, 32))
    measure_all(cands, row, target)
    slow = [c for c in cands if not c.meets]
    assert slow and all(c.latency_ms > target.latency_ms and "latency" in c.miss for c in slow)
    assert all(c.latency_ms <= target.latency_ms for c in cands if c.meets)
    assert choose(cands, target, row["params"]).meets
    with pytest.raises(SegkdError, match="no candidate meets the target.*the nearest is '"):
        measure_all(cands, row, Target(latency_ms=1e-9, size=(32, 32)))
        choose(cands, Target(latency_ms=1e-9, size=(32, 32)), row["params"])


def test_unreachable_target_names_the_nearest_candidate(segkd, teacher_ckpt, data_yaml, tmp_path):
    r = _plan(segkd, teacher_ckpt, data_yaml, tmp_path / "c", "--params", "100")
    assert r.returncode == 2
    assert "no candidate meets the target" in r.stderr and "the nearest is" in r.stderr
    assert "--candidate" in r.stderr


def test_budget_and_target_parsing():
    assert parse_params("0.5", 1000) == 500 and parse_params("2M", 1) == 2_000_000
    assert parse_params("500k", 1) == 500_000
    assert parse_budget("30m") == (None, 1800.0) and parse_budget("2000") == (2000, None)
    with pytest.raises(SegkdError, match="--budget"):
        parse_budget("soon")
    b = size_budget(n_train=27, batch_size=8)  # a 30-image folder: enough steps for BatchNorm
    assert b.steps >= MIN_STEPS and b.epochs * (b.iters_per_epoch or 3) >= MIN_STEPS
    short = size_budget(n_train=27, batch_size=8, steps=24)
    assert short.steps == 24 and "collapse" in short.note


def test_teacher_from_an_smp_state_dict(segkd, data_yaml, tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    net = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=4)
    sd = tmp_path / "smp_unet.pth"
    torch.save(net.state_dict(), sd)
    out = tmp_path / "c"
    r = _plan(segkd, sd, data_yaml, out, "--arch", "unet", "--encoder", "resnet18", "--classes", "4",
              "--params", "0.6", "--dry-run")
    assert r.returncode == 0, r.stderr
    from segkd.models.spec import load_model

    model, _ = load_model(out / "teacher.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), atol=1e-5)  # the same function, renamed keys
    kinds = {c["kind"] for c in json.loads((out / "plan.json").read_text())["candidates"]}
    assert {"cut", "narrow"} <= kinds


def test_unsupported_teacher_says_what_is_supported(segkd, data_yaml, tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a checkpoint")
    r = _plan(segkd, bad, data_yaml, tmp_path / "c")
    assert r.returncode == 2
    assert "segmentation_models_pytorch state dict" in r.stderr and "torchvision" in r.stderr


def test_compress_end_to_end_resumes_after_kill(segkd, teacher_ckpt, data_yaml, tmp_path):
    """kill -9 while the student trains, then --resume: the run finishes, exports, reports."""
    out = tmp_path / "c"
    args = ["compress", str(teacher_ckpt), "--data", str(data_yaml), "--out", str(out),
            "--size", "32,32", "--params", "0.6", "--budget", "6", "--no-html"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segkd.cli", "-q", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        while not (out / "student" / "last.pt").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() - t0 < 900, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "student" / "summary.json").exists()
    r = segkd(*args[:-1], "--resume", "--no-html")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    state = json.loads((out / "compress.json").read_text())
    assert state["kind"] in ("cut", "narrow", "cut+narrow") and state["steps"] == 6
    for f in ("student/best.pt", "export/student.onnx", "export/student.safetensors", "report.md"):
        assert (out / f).is_file(), f
    report = (out / "report.md").read_text()
    assert "| teacher |" in report and "| student |" in report and "kept of teacher" in report
    assert re.search(r"on cpu, \d+ thread\(s\) at 32x32", report)  # CPU latency says its threads
    cfg = yaml.safe_load((out / "student.yaml").read_text())  # an ordinary, re-runnable recipe
    assert cfg["model"]["init_from"] == "teacher" and cfg["teacher"]["cache"]
    assert [t["loss"] for t in cfg["stages"][0]["terms"]] == ["ce", "dist"]
    assert cfg["stages"][0]["select"]["metric"] == "select/mIoU" and cfg["data"]["select_fraction"] == 0.1


@pytest.mark.parametrize("with_test", [False, True], ids=["train+val", "train+val+test"])
def test_recipe_evaluates_test_only_where_the_data_has_it(tmp_path, with_test):
    """``test_split: auto`` (configs/camvid/_base.yaml) on a CamVid copy with train + val only:
    the student's recipe evaluates val alone (it asked for 'test' and failed after training)."""
    from test_data_usability import camvid_tree

    from segkd.apps.compress.recipe import _has

    root = camvid_tree(tmp_path / "camvid", ("train", "val") + (("test",) if with_test else ()))
    data = {"name": "camvid", "root": str(root), "test_split": "auto"}
    assert [s for s in ("val", "test") if _has(data, s)] == (["val", "test"] if with_test else ["val"])
