"""Run directories are never shared or silently overwritten (issue 18): a lock naming the holder,
a finished or stopped run is not restarted over, ``--resume`` keeps the config it started with
(keys that only say where / how fast it runs excepted) and a finished run is not resumed; the
``segkd study`` contract (study.json written before training, last.pt without summary resumed)
still holds."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from segkd.core.runlock import LOCK_NAME, _start_time

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import assert_nothing_half_written, write_config  # noqa: E402


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (but the TensorBoard folder) with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and "tb" not in p.parts}


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def finished(segkd, tmp_path) -> tuple[Path, Path]:
    """(config, run directory of a finished 1-epoch run)."""
    cfg = write_config(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    return cfg, run


@pytest.fixture
def stopped(finished) -> tuple[Path, Path]:
    """(config, run directory holding last.pt but no summary: a run that stopped)."""
    cfg, run = finished
    (run / "summary.json").unlink()
    return cfg, run


def _write_lock(run: Path, pid: int, host: str | None = None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "start": _start_time(pid), "started": "2026-01-01 00:00:00"}))
    return lock


# ---------------------------------------------------------------------------------- the lock
def test_second_run_on_a_locked_directory_is_refused(segkd, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = tmp_path / "run"
        lock = _write_lock(run, holder.pid)
        proc = segkd("train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(run))
        assert proc.returncode == 2
        assert f"run directory {run} is in use by process {holder.pid} on this host" in _flat(proc.stderr)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written
        assert json.loads(lock.read_text())["pid"] == holder.pid  # and the lock is not taken
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_another_host_is_refused_and_names_it(segkd, tmp_path):
    run = tmp_path / "run"
    _write_lock(run, 1, host="gpu-node-7")
    proc = segkd("train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(run))
    assert proc.returncode == 2
    assert "in use by process 1 on host gpu-node-7" in _flat(proc.stderr)
    assert f"delete {run / LOCK_NAME}" in _flat(proc.stderr)
    assert_nothing_half_written(run)


def test_stale_lock_of_a_dead_process_is_taken_over(segkd, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    _write_lock(run, dead.pid)
    proc = segkd("train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert f"taking over the lock of process {dead.pid}" in _flat(proc.stderr)
    assert (run / "summary.json").is_file() and not (run / LOCK_NAME).exists()


def test_lock_is_held_during_the_run_and_released_after_a_failure(tmp_path, monkeypatch):
    import segkd.engine
    from segkd.apps.runs import run_training
    from segkd.core.errors import SegkdError

    seen = []

    def fake_run(self):
        seen.append(json.loads((self.run_dir / LOCK_NAME).read_text()))
        raise SegkdError("stopped")

    monkeypatch.setattr(segkd.engine.Engine, "__init__", lambda self, cfg, rd, resume: setattr(self, "run_dir", rd))
    monkeypatch.setattr(segkd.engine.Engine, "run", fake_run)
    with pytest.raises(SegkdError, match="stopped"):
        run_training(str(write_config(tmp_path / "c.yaml")), [], run_dir=str(tmp_path / "run"))
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


# --------------------------------------------------------------------- reuse without --resume
def test_finished_run_directory_is_not_overwritten(segkd, finished):
    cfg, run = finished
    before = _files(run)
    proc = segkd("train", str(cfg), "--run-dir", str(run), "--set", "seed=1")
    assert proc.returncode == 2
    assert f"run directory {run} holds a finished run (summary.json)" in _flat(proc.stderr)
    assert _files(run) == before


def test_stopped_run_directory_needs_resume(segkd, stopped):
    cfg, run = stopped
    before = _files(run)
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert proc.returncode == 2
    assert f"holds a stopped run (last.pt); continue it with --resume {run}" in _flat(proc.stderr)
    assert _files(run) == before


def test_leftovers_of_a_run_without_checkpoint_are_removed(segkd, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 99, "old": true}\n')
    (run / "best.pt").write_bytes(b"stale")
    (run / "study.json").write_text("{}")
    proc = segkd("train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "removing metrics.jsonl, best.pt left by a run that stopped" in _flat(proc.stderr)
    assert '"old"' not in (run / "metrics.jsonl").read_text()
    assert (run / "best.pt").read_bytes() != b"stale" and (run / "study.json").read_text() == "{}"


# --------------------------------------------------------------------------------- --resume
def test_resume_with_another_config_is_refused_and_lists_differences(segkd, stopped):
    cfg, run = stopped
    before = _files(run)
    proc = segkd("train", str(cfg), "--resume", str(run), "--set", "stages.0.epochs=3",
                 "--set", "seed=5", "--set", "data.num_workers=1")
    assert proc.returncode == 2
    msg = _flat(proc.stderr)
    assert f"cannot resume {run} with a different config (2 difference(s)" in msg
    assert "seed: 0 -> 5" in msg and "stages.0.epochs: 1 -> 3" in msg
    assert "data.num_workers:" not in msg  # allowed to change, so not a difference
    assert _files(run) == before  # config.yaml, train_files.txt, checkpoints untouched


def test_resume_may_change_where_and_how_fast_it_runs(segkd, stopped):
    cfg, run = stopped
    proc = segkd("train", str(cfg), "--resume", str(run), "--set", "data.num_workers=1",
                 "--set", "trainer.threads=2", "--set", "trainer.log_every=5",
                 "--set", "trainer.accelerator=cpu")
    assert proc.returncode == 0, proc.stderr
    assert (run / "summary.json").is_file()
    assert "num_workers: 1" in (run / "config.yaml").read_text()


def test_resume_of_a_finished_run_says_so(segkd, finished):
    cfg, run = finished
    before = _files(run)
    proc = segkd("train", str(cfg), "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    assert f"run {run} is finished" in _flat(proc.stderr) and "nothing to resume" in proc.stderr
    assert "mIoU" in proc.stdout  # its summary is shown
    assert _files(run) == before
    proc = segkd("train", str(cfg), "--resume", str(run), "--set", "stages.0.epochs=2")
    assert proc.returncode == 2 and "stages.0.epochs: 1 -> 2" in _flat(proc.stderr)


# ------------------------------------------------------------------------------ study contract
def test_study_arm_trains_in_a_directory_with_study_json_then_resumes(tmp_path):
    """``segkd study`` writes study.json into the arm directory before training it, and resumes
    an arm with last.pt but no summary.json: both must pass the run-directory checks."""
    from segkd.apps.study import Arm, run_arm

    cfg = write_config(tmp_path / "c.yaml")
    run = tmp_path / "out" / "ce" / "kd_resnet10" / "f1.0" / "s0"
    arm = Arm("ce", "kd_resnet10", 1.0, 0, str(cfg), ["seed=0"], run)
    assert run_arm(arm, "t", []) == "trained"
    assert json.loads((run / "study.json").read_text())["method"] == "ce"
    (run / "summary.json").unlink()
    assert arm.status == "partial" and run_arm(arm, "t", []) == "resumed"
    assert (run / "summary.json").is_file() and not (run / LOCK_NAME).exists()
    assert run_arm(arm, "t", []) == "skipped"


def test_resume_drops_the_log_rows_of_the_interrupted_epoch(segkd, stopped):
    """Rows logged after last.pt (the epoch a kill interrupted, logged again on resume) and a row
    cut mid-write are removed, so every step appears once in metrics.jsonl."""
    cfg, run = stopped
    log = run / "metrics.jsonl"
    before = log.read_text()
    log.write_text(before + '{"step": 1000000, "train/loss_step": 9.9}\n{"step": 10000')
    proc = segkd("train", str(cfg), "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == before
