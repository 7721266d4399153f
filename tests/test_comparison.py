"""Method vs baseline (segkd.apps.report.stats, `segkd report --baseline`): the Welch interval against a
hand computation, the gap share, the verdicts, and the report's variant rule for config keys that
only newer runs carry."""
import json
import math

import numpy as np
import pytest

from segkd.apps.report.stats import compare, t975, welch_interval
from segkd.apps.report.tables import group_runs, load_runs, report
from segkd.core.errors import SegkdError


def _run(root, method, seed, val, config=None, precision=None):
    d = root / method / f"s{seed}"
    d.mkdir(parents=True)
    summary = {"name": f"{method}-s{seed}", "seed": seed, "params": 1000, "fraction": 1.0,
               "model": {"arch": "unet", "kwargs": {"encoder": "kd_resnet18"}}, "classes": ["a", "b"],
               "splits": {"val": {"mIoU": val, "per_class_iou": [val, val]}}, "wall_time_s": 1.0,
               "finished": f"2026-01-01 00:00:0{seed}"}
    if precision:
        summary["precision"] = {"requested": "auto", "value": precision, "reason": "test"}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "study.json").write_text(json.dumps({"method": method, "fraction": 1.0, "seed": seed}))
    if config is not None:
        (d / "config.yaml").write_text(config)


def test_welch_interval_matches_a_hand_computation():
    a, b = [0.40, 0.42, 0.41], [0.38, 0.39, 0.37]
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)  # = 4 for equal variances and n
    assert df == pytest.approx(4.0)
    half = 2.776 * math.sqrt(va + vb)
    delta, low, high = welch_interval(a, b)
    assert delta == pytest.approx(0.03)
    assert (low, high) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    assert welch_interval([0.4], b) is None  # one seed: no interval
    assert t975(4.9) == 2.776 and t975(1000) == 1.96


def test_compare_gives_delta_share_and_verdicts(tmp_path):
    for s, (ce, kd, at) in enumerate([(0.38, 0.42, 0.381), (0.39, 0.43, 0.395), (0.37, 0.41, 0.372)]):
        _run(tmp_path, "ce", s, ce)
        _run(tmp_path, "kd", s, kd)
        _run(tmp_path, "at", s, at)
    rows = {r["method"]: r for r in compare(group_runs(load_runs([tmp_path])), "ce", 0.58)}
    assert rows["ce"]["verdict"] == "baseline" and rows["ce"]["delta"] is None
    assert rows["kd"]["delta"] == pytest.approx(0.04)
    assert rows["kd"]["share"] == pytest.approx(0.04 / (0.58 - 0.38))
    assert rows["kd"]["verdict"] == "better"
    assert rows["at"]["verdict"] == "no difference"  # +0.003 with a seed spread of 0.01
    with pytest.raises(SegkdError, match="baseline method 'xx' not found"):
        compare(group_runs(load_runs([tmp_path])), "xx")


def test_report_writes_comparison_md(tmp_path):
    for s in range(3):
        _run(tmp_path, "ce", s, 0.38 + 0.01 * s)
        _run(tmp_path, "kd", s, 0.45 + 0.01 * s)
    written = report([tmp_path], tmp_path / "out", baseline="ce", teacher_score=0.5)
    text = written["comparison"].read_text()
    assert "| kd | 3 | 0.4600 ± 0.0100 | +0.0700 |" in text
    assert "+64%" in text and "better" in text  # 0.07 / (0.5 - 0.39)


def test_a_key_only_newer_runs_carry_does_not_split_a_method(tmp_path):
    """Seeds run before a config field existed (and with precision 'bf16-mixed' where newer runs
    say 'auto' and resolved to bf16-mixed) are one experiment; a real difference still splits."""
    old = "trainer:\n  precision: bf16-mixed\nstages:\n- {lr: 0.001}\n"
    new = "data:\n  check: error\ntrainer:\n  precision: auto\nstages:\n- {lr: 0.001}\n"
    _run(tmp_path, "ce", 0, 0.38, old)
    _run(tmp_path, "ce", 1, 0.39, new, precision="bf16-mixed")
    groups = group_runs(load_runs([tmp_path]))
    assert len(groups) == 1 and len(next(iter(groups.values()))) == 2
    _run(tmp_path, "ce", 2, 0.30, new.replace("0.001", "0.01"), precision="bf16-mixed")
    assert len(group_runs(load_runs([tmp_path]))) == 2


def _pnp(root, method, seed, val, params):
    _run(root, method, seed, val)
    path = root / method / f"s{seed}" / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(params=params, replacements=[{"paths": ["encoder.model.layer4.0.conv1"],
                                                 "block": "dwsep", "stage": 0}])
    path.write_text(json.dumps(summary))


def test_each_cheap_model_is_compared_with_its_own_labelled_twin(tmp_path):
    """Plug and Play at two sizes: replaced convolutions make another model (named by block and
    size), and a comma-separated baseline pairs each size with the arm of the same size."""
    for s in range(3):
        _pnp(tmp_path, "p60", s, 0.54 + 0.001 * s, 14_016_059)
        _pnp(tmp_path, "p60_labels", s, 0.53 + 0.001 * s, 14_016_059)
        _pnp(tmp_path, "p40", s, 0.50 + 0.001 * s, 9_607_611)
        _pnp(tmp_path, "p40_labels", s, 0.52 + 0.001 * s, 9_607_611)
    rows = {r["method"]: r for r in compare(group_runs(load_runs([tmp_path])), "p60_labels,p40_labels")}
    assert rows["p60"]["model"] == "unet-kd_resnet18 +dwsep 14.0M"
    assert rows["p40"]["model"] == "unet-kd_resnet18 +dwsep 9.6M"
    assert rows["p60"]["delta"] == pytest.approx(0.01) and rows["p60"]["verdict"] == "better"
    assert rows["p40"]["delta"] == pytest.approx(-0.02) and rows["p40"]["verdict"] == "worse"
    assert rows["p40_labels"]["verdict"] == rows["p60_labels"]["verdict"] == "baseline"
    with pytest.raises(SegkdError, match="give one baseline per model"):
        compare(group_runs(load_runs([tmp_path])), "p60_labels,p60")
