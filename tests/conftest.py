"""Shared test helpers: tiny configs on the synthetic set (no files, no downloads)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", message=".*TorchVision.*", category=DeprecationWarning)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CAMVID = SHARED / "data" / "camvid"
REQUIRE_SHARED = "SEGKD_REQUIRE_SHARED"  # set by .ci/run: there, a missing ../shared is a failure


def require_shared(path: Path) -> None:
    """Skip the calling test when ``path`` (under ../shared) is absent, or fail with a clear
    message when ``SEGKD_REQUIRE_SHARED=1`` or ``CI`` is set: CI always has ../shared, so a test
    that skips there hides a broken setup instead of testing something."""
    if path.exists():
        return
    if os.environ.get(REQUIRE_SHARED) == "1" or os.environ.get("CI"):
        pytest.fail(f"{path} is missing, and {REQUIRE_SHARED}=1 or CI says ../shared must be "
                    "present (the real teachers and fixtures live there)", pytrace=False)
    pytest.skip(f"{path} not found (set {REQUIRE_SHARED}=1 to make this a failure)")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state, whatever ran before it (no order-dependent
    flakes from unseeded torch.randn in a test)."""
    torch.manual_seed(0)


def tiny_cfg(**over) -> dict:
    """A raw config dict for a seconds-long run on 32x32 synthetic images."""
    from segkd.config.schema import deep_merge

    base = {
        "name": "tiny", "seed": 0,
        "data": {"name": "synthetic", "batch_size": 4, "num_workers": 0,
                 "options": {"num_images": 8, "size": [32, 32], "num_classes": 4}},
        "model": {"arch": "unet", "encoder": "kd_resnet10"},
        "stages": [{"name": "train", "epochs": 1, "terms": [{"loss": "ce"}],
                    "optimizer": {"name": "adam", "lr": 1e-3}}],
        # fp32 on every machine (the default, auto, is bf16 where the device computes it)
        "trainer": {"progress": False, "log_every": 1, "precision": "32"},
        "eval": {"splits": ["val"]},
    }
    return deep_merge(base, over)


@pytest.fixture
def tiny():
    return tiny_cfg


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory) -> Path:
    """A trained (1 epoch) tiny UNet-kd_resnet14 teacher checkpoint, shared by tests."""
    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    run = tmp_path_factory.mktemp("teacher")
    cfg = config_from_dict(tiny_cfg(name="teacher", model={"encoder": "kd_resnet14"}))
    Engine(cfg, run).run()
    return run / "best.pt"


@pytest.fixture
def segkd(monkeypatch, capsys):
    """``segkd(*args)``: run ``segkd -q ARGS`` in-process via ``segkd.cli.main`` and return a
    CompletedProcess (exit code, stdout, stderr) like a subprocess."""
    import torch

    import segkd.cli as entry

    monkeypatch.setenv("COLUMNS", "1000")  # every rich console is this wide: one line per message
    threads = torch.get_num_threads()

    def run(*args: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", ["segkd", "-q", *args])
        try:
            with pytest.raises(SystemExit) as exit_:
                entry.main()
        finally:
            torch.set_num_threads(threads)  # trainer.threads changes it process-wide
        cap = capsys.readouterr()
        return subprocess.CompletedProcess(args, exit_.value.code, cap.out, cap.err)

    return run




def step_rows(run: Path) -> int:
    """How many per-iteration rows a run's metrics.jsonl holds (one per step with log_every=1)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"train/loss_step"' in line for line in path.read_text().splitlines())


def run_then_kill(args: list[str], run: Path, ready, timeout: float, what: str) -> None:
    """Start `segkd -q ARGS --run-dir RUN` and SIGKILL it as soon as ``ready()`` is true (a real
    kill -9: no cleanup runs); fails if the run ends first or ``what`` does not happen in time."""
    import signal
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segkd.cli", "-q", *args, "--run-dir", str(run)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() - t0 < timeout, f"{what} did not happen in time"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def interrupt_at_epoch(monkeypatch, raw: dict, run_dir: Path, k: int) -> None:
    """Run an Engine on config dict ``raw`` in ``run_dir`` and stop it (KeyboardInterrupt) as its
    k-th epoch starts, in process: the epochs before it are checkpointed, as after a crash."""
    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    orig, calls = Engine._epoch, {"n": 0}

    def stop(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == k:
            raise KeyboardInterrupt
        return orig(self, *a, **kw)

    monkeypatch.setattr(Engine, "_epoch", stop)
    with pytest.raises(KeyboardInterrupt):
        Engine(config_from_dict(raw), run_dir).run()
    monkeypatch.setattr(Engine, "_epoch", orig)
