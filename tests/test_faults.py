"""Faults during a run: kill -9 mid-epoch then --resume, corrupted and truncated checkpoints,
atomic checkpoint writes. Training runs go through the real CLI in subprocesses."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.core.errors import CheckpointError

# same helpers as test_errors (tests are not a package: import by module name)
sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_then_kill, step_rows  # noqa: E402
from test_errors import assert_clean_error, cli, write_config  # noqa: E402

EPOCHS, ITERS = 3, 6
STAGE = {"epochs": EPOCHS, "iters_per_epoch": ITERS, "optimizer": {"name": "adam", "lr": 1e-3},
         "schedule": {"name": "onecycle", "max_lr": 1e-3}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run dir) of an uninterrupted 3-epoch run."""
    tmp = tmp_path_factory.mktemp("faults")
    cfg = write_config(tmp / "cfg.yaml", stages=[STAGE])
    proc = cli("train", str(cfg), "--run-dir", str(tmp / "ref"))
    assert proc.returncode == 0, proc.stderr
    return cfg, tmp / "ref"


def _kill_during_epoch_2(cfg: Path, run: Path, timeout: float = 240) -> None:
    """Start a run, wait until epoch 1 is checkpointed and epoch 2 has taken 2 steps, kill -9."""
    run_then_kill(["train", str(cfg)], run,
                  lambda: (run / "last.pt.sha256").is_file() and step_rows(run) >= ITERS + 2,
                  timeout, "epoch 1 checkpointed")


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_kill_9_mid_epoch_then_resume_matches_uninterrupted(tmp_path, reference):
    cfg, ref = reference
    run = tmp_path / "run"
    _kill_during_epoch_2(cfg, run)
    assert not (run / "summary.json").exists()
    killed_at = load_checkpoint(run / "last.pt")["progress"]["epoch"]
    assert 1 <= killed_at < EPOCHS  # normally 1: killed two steps into epoch 2

    proc = cli("train", str(cfg), "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    assert _summary(run)["splits"] == _summary(ref)["splits"]  # every metric, bit for bit
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(ref / name)["state_dict"], load_checkpoint(run / name)["state_dict"]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    hist = load_checkpoint(run / "last.pt")["history"]
    assert [h["epoch"] for h in hist] == list(range(1, EPOCHS + 1))


def test_corrupted_byte_in_last_pt_refuses_resume(tmp_path, reference):
    cfg, ref = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "summary.json").unlink()  # a stopped run (a finished one is not resumed)
    data = bytearray((run / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    (run / "last.pt").write_bytes(bytes(data))
    proc = cli("train", str(cfg), "--resume", str(run))
    assert_clean_error(proc, "checkpoint", str(run / "last.pt"), "is corrupt", "sha256")


def test_truncated_checkpoint_without_sidecar_is_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": "segkd-checkpoint", "w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path)
    path.with_name("last.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}"):
        load_checkpoint(path)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """An interrupted write (any exception, even KeyboardInterrupt) leaves the old file and no
    temp file; the sidecar always describes the file beside it."""
    path = tmp_path / "last.pt"
    save_checkpoint({"v": torch.zeros(3)}, path)
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("segkd.core.checkpoint.torch.save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"v": torch.ones(3)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]
    assert torch.equal(load_checkpoint(path)["v"], torch.zeros(3))
