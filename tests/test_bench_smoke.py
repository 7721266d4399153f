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


# ============================================================================ suite.py
@pytest.fixture(scope="module")
def suite():
    return _load("suite")


@pytest.mark.parametrize("tier", ["cpu", "gpu"])
def test_suite_dry_run_lists_both_pairs_and_data(suite, tier, tmp_path, capsys):
    out = tmp_path / "out"
    assert suite.main(["--tier", tier, "--dry-run", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    steps = [ln for ln in lines if "bench_step.py" in ln]
    assert any("--pair unet" in ln for ln in steps) and any("--pair deeplab" in ln for ln in steps)
    assert any("bench_data.py" in ln for ln in lines)
    assert all(f"--json {out}" in ln and "--data-root" in ln for ln in lines)
    device = "cuda" if tier == "gpu" else "cpu"
    assert all(f"--device {device}" in ln for ln in lines)
    if tier == "gpu":
        assert any("--compile" in ln for ln in steps)
        assert any("--no-channels-last" in ln for ln in steps)
        assert any("--precision 32" in ln for ln in steps)
    assert not out.exists()  # a dry run writes nothing


def test_suite_only_and_quick(suite, tmp_path, capsys):
    assert suite.main(["--tier", "cpu", "--quick", "--only", "deeplab,data", "--dry-run",
                       "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "--pair deeplab" in lines[0] and "bench_data.py" in lines[1]
    assert "--size 48,64" in lines[0] and "--iters 2" in lines[0]  # half of 96,128; fewer rounds
    with pytest.raises(SystemExit):
        suite.main(["--only", "resnet", "--dry-run", "--out", str(tmp_path)])


def test_suite_end_to_end_toy(suite, tmp_path, capsys):
    rc = suite.main(["--toy", "--out", str(tmp_path), "--data-root", str(tmp_path / "none")])
    assert rc == 0, capsys.readouterr().out
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert saved["failed"] == [] and len(saved["commands"]) == 2
    assert {"cpu", "cores", "torch"} <= set(saved["machine"])
    step, data = saved["runs"]
    assert step["ok"] and data["ok"] and step["result"]["rows"] and data["result"]["rows"]
    assert data["result"]["rows"][0]["device"] == "cpu"
    titles = [t["title"] for t in saved["tables"]]
    assert len(titles) == 3 and all(t["rows"] for t in saved["tables"])
    variants = [r[7] for r in saved["tables"][0]["rows"]]
    assert variants == ["student", "teacher", "segkd_kd", "segkd_cwd", "bare_kd"]
    md = (tmp_path / "suite.md").read_text()
    assert all(f"**{t}**" in md for t in titles) and "| tiny | cpu | fp32 | 2 | 32x32 |" in md


def test_suite_failing_subcommand_exits_nonzero(suite, tmp_path, capsys, monkeypatch):
    bad = ["--pair", "tiny", "--device", "nope", "--size", "32,32"]  # fails at torch.device()
    monkeypatch.setattr(suite, "TOY_PLAN", [[suite.STEP, *bad], [suite.DATA, *bad]])
    rc = suite.main(["--toy", "--out", str(tmp_path), "--data-root", str(tmp_path / "none")])
    assert rc == 1
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert len(saved["failed"]) == 2  # the second ran after the first failed
    assert all((tmp_path / f"{name}.log").is_file() for name in saved["failed"])
    assert "FAILED (2 of 2)" in capsys.readouterr().out
