"""``segkd cheap plan --size``: parsed by the shared H,W parser (segkd.cli.base.pair), keeping
the forms it always took ("H,W", "HxW", "S") and refusing the rest in one line."""
from __future__ import annotations

import pytest


def _plan(segkd, size: str):
    return segkd("cheap", "plan", "unet:kd_resnet10", "--classes", "3", "--no-latency",
                 "--path", "decoder.*", "--size", size)


@pytest.mark.parametrize("size, shown", [("32,48", "32x48"), ("32x48", "32x48"), ("40", "40x40")])
def test_cheap_plan_takes_h_w_forms(segkd, size, shown):
    proc = _plan(segkd, size)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"replacement at {shown}" in proc.stdout


@pytest.mark.parametrize("size", ["abc", "0,32", "32,48,64"])
def test_cheap_plan_refuses_a_size_that_is_not_h_w(segkd, size):
    proc = _plan(segkd, size)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --size: expected H,W"), proc.stderr
