"""``segkd info --compare`` latency: ``--threads`` sets the thread count while measuring (and
restores it), and repeats that spread too much are called out (issue 18). No timing asserts:
the measurement itself is replaced where its value matters."""
from __future__ import annotations

import pytest
import torch

import segkd.models.cost as profile
from segkd.apps.deploy_compare import SPREAD_WARN, LatencySetup, spread_warning


def _fake_latency(std_ms: float, seen: list | None = None):
    def measure(*_a, **_k):
        if seen is not None:
            seen.append(torch.get_num_threads())
        return {"mean_ms": 100.0, "std_ms": std_ms, "p50_ms": 100.0}
    return measure


def test_threads_apply_while_measuring_and_are_restored(monkeypatch):
    seen: list[int] = []
    monkeypatch.setattr(profile, "measure_latency", _fake_latency(1.0, seen))
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    LatencySetup(threads=target).measure(torch.nn.Identity(), (8, 8))
    assert seen == [target] and torch.get_num_threads() == before
    LatencySetup().measure(torch.nn.Identity(), (8, 8))
    assert seen[-1] == before  # no --threads: torch's own setting


def test_threads_must_be_positive():
    from segkd.apps.export import ExportError

    with pytest.raises(ExportError, match="--threads must be >= 1, got 0"):
        LatencySetup(threads=0).check()


def test_spread_warning_threshold():
    assert spread_warning("t", "PyTorch", {"mean_ms": 100.0, "std_ms": 100 * SPREAD_WARN}, 20) == []
    (w,) = spread_warning("t", "PyTorch", {"mean_ms": 100.0, "std_ms": 60.0}, 20)
    assert "t: PyTorch latency varies a lot between its 20 timed runs (std 60.0 ms = 60% of the " \
           "mean 100.0 ms)" in w and "--threads" in w


@pytest.mark.parametrize("std,warned", [(60.0, True), (2.0, False)])
def test_compare_warns_when_repeats_spread(segkd, teacher_ckpt, monkeypatch, std, warned):
    monkeypatch.setattr(profile, "measure_latency", _fake_latency(std))
    proc = segkd("info", "--compare", str(teacher_ckpt), "--compare", str(teacher_ckpt),
                 "--size", "32,32", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "1 thread(s)" in proc.stdout
    flat = " ".join(proc.stdout.split())
    assert ("warning: teacher: PyTorch latency varies a lot" in flat) is warned
    assert ("warning: student: PyTorch latency varies a lot" in flat) is warned
