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
    monkeypatch.setattr(sys.modules["bench_variants"], "torchdistill_available", lambda: False)
    monkeypatch.setattr(sys.modules["bench_variants"], "teacher_cache_available", lambda: False)
    out = tmp_path / "step.json"
    names = "student,student_kd,teacher,segkd_kd,segkd_kd_cached,bare_kd,bare_kd_tuned,td_kd"
    res = bench_step.main(["--pair", "tiny", "--device", "cpu", "--batch", "2", "--size", "32,32",
                           "--iters", "2", "--warmup", "0", "--data-root", str(tmp_path / "none"),
                           "--variants", names, "--json", str(out)])
    printed = capsys.readouterr().out
    assert "torchdistill: not installed" in printed and "segkd_kd_cached: not available" in printed
    saved = json.loads(out.read_text())
    ran = ["student", "student_kd", "teacher", "segkd_kd", "bare_kd", "bare_kd_tuned"]
    assert [r["variant"] for r in saved["rows"]] == ran
    assert set(saved["skipped"]) == {"segkd_kd_cached", "td_kd"}
    row = saved["rows"][0]
    assert row["device"] == "cpu" and row["resolution"] == "32x32" and row["data"] == "synthetic"
    assert len(row["samples"]["cpu"]) == len(row["samples"]["wall"]) == 2  # raw per-round samples
    assert [o[0] for o in saved["orders"]] == ran[:2]  # each round starts with the next variant
    cpu = {r["variant"]: r["samples"]["cpu"] for r in saved["rows"]}
    floor = [a + b for a, b in zip(cpu["student_kd"], cpu["teacher"])]
    kd = saved["comparisons"]["segkd_kd/floor"]
    assert kd["per_round"] == pytest.approx([a / b for a, b in zip(cpu["segkd_kd"], floor)])
    lo, hi = kd["ci95"]
    assert lo <= kd["ratio"] <= hi and kd["rounds"] == 2
    assert {"segkd_kd/bare_kd_tuned", "bare_kd_tuned/bare_kd", "segkd_kd/bare_kd"} <= set(res["comparisons"])
    from segkd.engine.runtime import cpu_flags

    assert saved["machine"]["cpu_flags"] == sorted(cpu_flags())  # the CPU's flags are recorded
    assert "load average" in saved["machine"]["uptime_end"]


def test_bench_step_cached_teacher_variant(bench_step, tmp_path):
    import segkd.distill.teacher_cache  # noqa: F401  (an import error fails here, never skips)

    assert sys.modules["bench_variants"].teacher_cache_available()
    res = bench_step.main(["--pair", "tiny", "--device", "cpu", "--batch", "2", "--size", "32,32",
                           "--iters", "1", "--warmup", "0", "--data-root", str(tmp_path / "none"),
                           "--variants", "student_kd,teacher,segkd_kd,segkd_kd_cached"])
    assert [r["variant"] for r in res["rows"]][-1] == "segkd_kd_cached" and not res["skipped"]
    assert {"segkd_kd_cached/floor_cached", "segkd_kd_cached/segkd_kd"} <= set(res["comparisons"])


def test_bench_step_require_td_fails_without_torchdistill(bench_step, monkeypatch, capsys):
    monkeypatch.setattr(bench_step, "torchdistill_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        bench_step.main(["--pair", "tiny", "--device", "cpu", "--require-td"])
    assert e.value.code == 2 and "--require-td" in capsys.readouterr().out


def test_bootstrap_interval_and_verdict():
    import bench_stats as st

    same = [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.0]
    q = st.paired_ratio(same, [1.0] * 8, "a", "b")
    assert q["ci95"][0] <= 1.0 <= q["ci95"][1] and q["verdict"] == st.NO_DIFFERENCE
    slow = st.paired_ratio([1.2, 1.25, 1.22, 1.19, 1.21], [1.0] * 5, "a", "b")
    assert slow["ci95"][0] > 1.0 and slow["verdict"].startswith("a slower")
    fast = st.paired_ratio([0.8, 0.82, 0.79, 0.81], [1.0] * 4, "a", "b")
    assert fast["ci95"][1] < 1.0 and fast["verdict"].startswith("a faster")
    assert st.bootstrap_median_ci(same) == st.bootstrap_median_ci(same)  # seeded
    with pytest.raises(ValueError):
        st.paired_ratio([1.0], [1.0, 2.0])


def test_rounds_rotate_the_order(bench_step):
    calls: list[str] = []
    variants = {k: (lambda chunk, k=k: calls.append(k)) for k in "abc"}
    _, orders = bench_step.measure(variants, [{}], rounds=3, warmup=1, steps=1,
                                   device=bench_step.torch.device("cpu"))
    assert orders == [["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]  # round 0 was warm-up
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["b", "c", "a"]


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
    lines = [ln for ln in capsys.readouterr().out.strip().splitlines() if not ln.startswith("#")]
    steps = [ln for ln in lines if "bench_step.py" in ln]
    assert any("--pair unet" in ln for ln in steps) and any("--pair deeplab" in ln for ln in steps)
    assert any("bench_data.py" in ln for ln in lines)
    assert all(f"--json {out}" in ln and "--data-root" in ln for ln in lines)
    device = "cuda" if tier == "gpu" else "cpu"
    assert all(f"--device {device}" in ln for ln in lines)
    if tier == "gpu":
        assert any("--compile" in ln for ln in steps)
        assert any("--precision 32" in ln for ln in steps)
    assert not out.exists()  # a dry run writes nothing


def test_suite_only_and_quick(suite, tmp_path, capsys):
    assert suite.main(["--tier", "cpu", "--quick", "--only", "deeplab,data", "--dry-run",
                       "--out", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.strip().splitlines() if not ln.startswith("#")]
    assert len(lines) == 2 and "--pair deeplab" in lines[0] and "bench_data.py" in lines[1]
    assert "--size 48,64" in lines[0] and "--iters 3" in lines[0]  # half of 96,128; fewer rounds
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
    assert len(titles) == 4 and all(t["rows"] for t in saved["tables"])
    variants = [r[7] for r in saved["tables"][0]["rows"]]
    assert variants == ["student", "student_kd", "teacher", "segkd_kd", "segkd_cwd", "bare_kd",
                        "bare_kd_tuned"]
    headline = dict(zip(saved["tables"][1]["headers"], saved["tables"][1]["rows"][0]))
    assert "[" in headline["segkd_kd/bare_kd_tuned"] and headline["segkd_kd/td_kd_tuned"] == "-"
    assert "segkd_kd/floor" in [r[7] for r in saved["tables"][2]["rows"]]  # the verdicts
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


def test_gpu_tier_within_budget_and_dry_run_estimates(suite, tmp_path, capsys):
    assert suite.main(["--tier", "gpu", "--budget", "480", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    kept = [ln for ln in out.splitlines() if ln.startswith(suite.sys.executable)]
    total = float(out.split("estimated total: ")[1].split(" s")[0])
    assert total <= 480 and "left out: over the budget" in out
    want = ["--batch 8 --no-compile", "--batch 8 --compile", "--batch 32", "--batch 64"]
    unet = [ln for ln in kept if "--pair unet" in ln and "bench_step" in ln]
    assert all(any(w in ln for ln in unet) for w in want)
    assert any("--pair deeplab" in ln and "--batch 16" in ln for ln in kept)
    assert all("--device cuda" in ln for ln in kept)
    assert suite.sb.within_budget([100, 300, 50, 90], 200) == [True, False, True, False]


def test_suite_require_td_fails_fast(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(suite.bs, "torchdistill_available", lambda: False)
    rc = suite.main(["--toy", "--require-td", "--out", str(tmp_path / "o"),
                     "--data-root", str(tmp_path / "none")])
    assert rc == 2 and "--require-td" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()  # nothing ran, nothing half-written
    suite.main(["--tier", "cpu", "--require-td", "--dry-run", "--out", str(tmp_path)])
    assert all("--require-td" in ln for ln in capsys.readouterr().out.splitlines()
               if "bench_step.py" in ln and not ln.startswith("#"))


# ============================================================================ gpu_bundle.py
def test_gpu_bundle_jpeg_camvid_and_requirements(tmp_path):
    import numpy as np
    from PIL import Image

    gb = _load("gpu_bundle")
    src = tmp_path / "camvid"
    for split, n in (("train", 3), ("val", 2)):
        (src / split).mkdir(parents=True)
        (src / f"{split}annot").mkdir()
        for i in range(n):
            Image.fromarray(np.full((8, 12, 3), 40 * i, np.uint8)).save(src / split / f"f{i}.png")
            Image.fromarray(np.full((8, 12), i, np.uint8)).save(src / f"{split}annot" / f"f{i}.png")
    assert gb.main(["camvid", str(src), str(tmp_path / "out"), "--images", "2", "--val", "5"]) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "train").iterdir()) == ["f0.jpg", "f1.jpg"]
    assert len(list((out / "val").iterdir())) == 2
    label = out / "trainannot" / "f1.png"
    assert label.read_bytes() == (src / "trainannot" / "f1.png").read_bytes()  # labels lossless
    from segkd.data import build_dataset

    ds = build_dataset("camvid", root=str(out), split="train")  # segkd reads the JPEG copy
    assert len(ds) == 2
    with pytest.raises(SystemExit):
        gb.main(["camvid", str(tmp_path / "nothing"), str(tmp_path / "o2")])
    deps = gb.closure({"pydantic", "torch"}, skip={"annotated-types"})
    assert "pydantic" in deps and "pydantic-core" in deps  # followed through requirements
    assert "torch" not in deps and "annotated-types" not in deps  # provided / skipped
