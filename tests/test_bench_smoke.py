"""The benchmark suite runs end to end at toy sizes (no torchdistill, no timing asserts)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    """Import ``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def bench_step():
    return _load("bench_step")


def test_bench_step_runs_and_writes_json(bench_step, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench_step, "torchdistill_available", lambda: False)
    out = tmp_path / "step.json"
    res = bench_step.main(["--pair", "tiny", "--device", "cpu", "--batch", "2", "--size", "32,32",
                           "--iters", "1", "--warmup", "0", "--data-root", str(tmp_path / "none"),
                           "--variants", "student,teacher,segkd_kd,bare_kd,td_kd",
                           "--json", str(out)])
    assert "torchdistill: not installed" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert [r["variant"] for r in saved["rows"]] == ["student", "teacher", "segkd_kd", "bare_kd"]
    assert {"floor_s (median)", "segkd_kd/floor (min)", "segkd_kd/bare_kd (paired)"} <= set(res["ratios"])
    row = saved["rows"][0]
    assert row["device"] == "cpu" and row["resolution"] == "32x32" and row["data"] == "synthetic"


def test_bench_data_runs(tmp_path):
    bench_data = _load("bench_data")
    res = bench_data.main(["--pair", "tiny", "--batch", "2", "--size", "32,32", "--workers", "0", "--batches", "1",
                           "--rounds", "1", "--step-rounds", "1", "--data-root",
                           str(tmp_path / "none")])
    whats = [r["what"] for r in res["rows"]]
    assert "loader w=0 cache=off" in whats and "step segkd_kd" in whats
    assert any(k.startswith("data share") for k in res["verdict"])
