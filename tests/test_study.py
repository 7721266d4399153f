"""segkd.apps.study: the grid, one teacher injected, skip / resume, dry-run, spec errors, a real tiny run."""
import json
import os
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import segkd.apps.study as study_mod
from segkd.apps.study import load_spec, run_study
from segkd.core.errors import ConfigError, SegkdError

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

TINY = {"data": {"name": "synthetic", "options": {"num_images": 8, "size": [32, 32]},
                 "batch_size": 4, "num_workers": 0},
        "model": {"arch": "unet", "encoder": "kd_resnet10"},
        "stages": [{"epochs": 1}], "trainer": {"progress": False}}


def _quiet(tmp_path):
    return Console(file=open(tmp_path / "console.txt", "w"), width=200)


class FakeTrainer:
    """Stands in for run_training: records calls, writes summary.json (and best.pt)."""

    def __init__(self, fail_on=None):
        self.calls, self.fail_on = [], fail_on

    def __call__(self, config, overrides, run_dir=None, resume=None, out_dir=None):
        self.calls.append({"config": config, "overrides": list(overrides), "run_dir": run_dir,
                           "resume": resume})
        rd = Path(run_dir or resume)
        if self.fail_on and self.fail_on in str(rd):
            raise SegkdError("boom")
        over = dict(o.split("=", 1) for o in overrides)
        enc = over.get("model.encoder", "kd_resnet34")
        seed = int(over.get("seed", 0))
        summary = {"name": over.get("name", "teacher"), "seed": seed, "fraction": float(over.get("data.fraction", 1.0)),
                   "model": {"arch": "unet", "kwargs": {"encoder": enc}}, "params": 1_000_000,
                   "classes": ["a", "b"],
                   "splits": {"val": {"mIoU": 0.5 + seed / 10, "per_class_iou": [0.5, 0.5]}}}
        rd.mkdir(parents=True, exist_ok=True)
        (rd / "best.pt").write_bytes(b"x")
        (rd / "summary.json").write_text(json.dumps(summary))
        return rd, summary


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Config files and a spec: 2 students x 2 methods x 2 fractions x 2 seeds."""
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump({**TINY, "name": "teacher"}))
    (tmp_path / "scratch.yaml").write_text(yaml.safe_dump(TINY))
    kd = {**TINY, "teacher": {}, "stages": [{"epochs": 1, "terms": [{"loss": "ce", "teacher": None},
                                                                    {"loss": "kd"}]}]}
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd))
    spec = {"name": "t", "out_dir": str(tmp_path / "out"),
            "teacher": {"config": "teacher.yaml", "seed": 7},
            "students": ["kd_resnet10", "kd_resnet18"], "methods": {"scratch": "scratch.yaml", "kd": "kd.yaml"},
            "fractions": [1.0, 0.25], "seeds": [0, 1], "set": ["data.batch_size=2"],
            "per_method_set": {"kd": ["stages.0.epochs=2"]}}
    fake = FakeTrainer()
    monkeypatch.setattr(study_mod, "run_training", fake)
    monkeypatch.chdir(tmp_path)  # relative config paths resolve against the spec's folder too
    return tmp_path, spec, fake


def _write_spec(root, spec, name="spec.yaml"):
    (root / name).write_text(yaml.safe_dump(spec))
    return root / name


def test_grid_teacher_once_injected(setup):
    root, spec, fake = setup
    run_study(_write_spec(root, spec), console=_quiet(root))
    assert len(fake.calls) == 1 + 2 * 2 * 2 * 2
    teacher = fake.calls[0]
    assert teacher["run_dir"] == str(root / "out" / "teacher") and "seed=7" in teacher["overrides"]
    assert "data.batch_size=2" in teacher["overrides"]
    ckpt = json.dumps(str((root / "out" / "teacher" / "best.pt").resolve()))
    arms = fake.calls[1:]
    dirs = {c["run_dir"] for c in arms}
    assert dirs == {str(root / "out" / m / e / f"f{f}" / f"s{s}") for m in ("scratch", "kd")
                    for e in ("kd_resnet10", "kd_resnet18") for f in (1.0, 0.25) for s in (0, 1)}
    for c in arms:
        kd = "/kd/" in c["run_dir"]
        assert (f"teacher.checkpoint={ckpt}" in c["overrides"]) == kd
        assert ("stages.0.epochs=2" in c["overrides"]) == kd
        assert "data.batch_size=2" in c["overrides"] and c["resume"] is None
    c = next(c for c in arms if c["run_dir"].endswith("kd/kd_resnet18/f0.25/s1"))
    assert {"model.encoder=kd_resnet18", "seed=1", "data.fraction=0.25",
            "name=kd-kd_resnet18-f0.25"} <= set(c["overrides"])
    rec = json.loads((Path(c["run_dir"]) / "study.json").read_text())
    assert rec == {"study": "t", "method": "kd", "encoder": "kd_resnet18", "fraction": 0.25, "seed": 1}
    md = (root / "out" / "results.md").read_text()
    assert "### kd, fraction 0.25" in md and "### teacher, fraction 1" in md
    assert (root / "out" / "size_vs_miou.png").is_file() and (root / "out" / "study.yaml").is_file()
    # a second invocation finds everything done: nothing is trained again
    fake.calls.clear()
    run_study(root / "spec.yaml", console=_quiet(root))
    assert fake.calls == []


def test_partial_resumed_done_skipped_and_dry_run(setup):
    root, spec, fake = setup
    spec.update(students=["kd_resnet10"], fractions=[1.0], seeds=[0, 1], methods={"scratch": "scratch.yaml"},
                per_method_set={})
    path = _write_spec(root, spec)
    base = root / "out" / "scratch" / "kd_resnet10" / "f1.0"
    (base / "s0").mkdir(parents=True)
    (base / "s0" / "last.pt").write_bytes(b"x")
    (base / "s1").mkdir(parents=True)
    (base / "s1" / "summary.json").write_text("{}")
    arms = run_study(path, dry_run=True, console=_quiet(root))
    assert [(a.method, a.seed, a.status) for a in arms] == [("teacher", 7, "todo"), ("scratch", 0, "partial"),
                                                            ("scratch", 1, "done")]
    assert fake.calls == []
    run_study(path, report=False, console=_quiet(root))
    # no arm distils, so the teacher is not trained; s0 resumed from its own config; s1 skipped
    assert fake.calls == [{"config": None, "overrides": [], "run_dir": None, "resume": str(base / "s0")}]


def test_existing_teacher_checkpoint_is_injected(setup):
    root, spec, fake = setup
    (root / "t.pt").write_bytes(b"x")
    spec.update(teacher={"checkpoint": "t.pt"}, students=["kd_resnet10"], fractions=[1.0], seeds=[0])
    run_study(_write_spec(root, spec), report=False, console=_quiet(root))
    assert len(fake.calls) == 2 and all(c["run_dir"] != str(root / "out" / "teacher") for c in fake.calls)
    kd = next(c for c in fake.calls if "/kd/" in c["run_dir"])
    # found beside the spec, named relative to the current directory (no absolute path of this
    # machine in the run's config)
    rel = os.path.relpath((root / "t.pt").resolve())
    assert not os.path.isabs(rel)
    assert f"teacher.checkpoint={json.dumps(rel)}" in kd["overrides"]


def test_shard_splits_the_plan(setup):
    root, spec, fake = setup
    path = _write_spec(root, spec)
    every = [(a.method, a.seed) for a in run_study(path, dry_run=True, console=_quiet(root))]
    parts = [[(a.method, a.seed) for a in run_study(path, dry_run=True, console=_quiet(root),
                                                    shard=(k, 2))] for k in (0, 1)]
    plan = [x for x in every if x[0] != "teacher"]
    assert [x for x in parts[0] if x[0] != "teacher"] == plan[0::2]
    assert [x for x in parts[1] if x[0] != "teacher"] == plan[1::2]


def test_keep_going_collects_failures(setup, monkeypatch):
    root, spec, _ = setup
    fake = FakeTrainer(fail_on="kd_resnet18")
    monkeypatch.setattr(study_mod, "run_training", fake)
    spec.update(fractions=[1.0], seeds=[0])
    with pytest.raises(SegkdError, match="2 run"):
        run_study(_write_spec(root, spec), keep_going=True, report=False, console=_quiet(root))
    assert len(fake.calls) == 1 + 4


@pytest.mark.parametrize("change, message", [
    ({"studnets": ["x"]}, "Did you mean: students"),
    ({"methods": {"1bad": "scratch.yaml"}}, "must start with a letter"),
    ({"methods": {"teacher": "scratch.yaml"}}, "reserved"),
    ({"per_method_set": {"nope": ["seed=1"]}}, "unknown method"),
    ({"fractions": [0.0]}, r"\(0, 1\]"),
    ({"methods": {"kd": "missing.yaml"}}, "missing.yaml not found"),
    ({"teacher": {}}, "give `config`"),
    ({"teacher": {"config": "teacher.yaml", "chekpoint": "x"}}, "Did you mean: checkpoint"),
])
def test_spec_errors(setup, change, message):
    root, spec, _ = setup
    spec.update(change)
    with pytest.raises(ConfigError, match=message):
        load_spec(_write_spec(root, spec))


def test_distilling_method_without_teacher_is_an_error(setup):
    root, spec, _ = setup
    del spec["teacher"]
    with pytest.raises(ConfigError, match="method 'kd'.*teacher"):
        run_study(_write_spec(root, spec), dry_run=True, console=_quiet(root))


def test_real_tiny_study(tmp_path, monkeypatch):
    """Teacher trained once on the synthetic set, one KD arm distilled from it, then the report."""
    monkeypatch.setattr(study_mod, "run_training", __import__("segkd.apps.runs").apps.runs.run_training)
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump({**TINY, "name": "teacher"}))
    kd = {**TINY, "teacher": {}, "stages": [{"epochs": 1, "terms": [{"loss": "ce", "teacher": None},
                                                                    {"loss": "kd"}]}]}
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(kd))
    spec = {"name": "tiny", "out_dir": str(tmp_path / "out"), "teacher": {"config": "teacher.yaml"},
            "students": ["kd_resnet10"], "methods": {"kd": "kd.yaml"}, "fractions": [1.0], "seeds": [0]}
    run_study(_write_spec(tmp_path, spec), console=_quiet(tmp_path))
    arm = tmp_path / "out" / "kd" / "kd_resnet10" / "f1.0" / "s0"
    summary = json.loads((arm / "summary.json").read_text())
    assert summary["teacher"] == str((tmp_path / "out" / "teacher" / "best.pt").resolve())
    csv_text = (tmp_path / "out" / "results.csv").read_text()
    assert "unet-kd_resnet10,kd,1.0" in csv_text and "unet-kd_resnet10,teacher,1.0" in csv_text


def test_results_dir_mirrors_runs_and_counts_them_done(setup):
    """A finished arm's small files are copied to results_dir; a fresh out_dir (another machine,
    a fresh checkout with the committed results) skips those arms instead of repeating them."""
    root, spec, fake = setup
    spec = {**spec, "students": ["kd_resnet10"], "methods": {"scratch": "scratch.yaml"},
            "fractions": [1.0], "results_dir": str(root / "results"), "per_method_set": {}}
    spec.pop("teacher")
    run_study(_write_spec(root, spec), console=_quiet(root), report=False)
    mirrored = root / "results" / "scratch" / "kd_resnet10" / "f1.0" / "s0" / "summary.json"
    assert mirrored.is_file() and not (mirrored.parent / "best.pt").exists()
    assert (mirrored.parent / "study.json").is_file()
    n = len(fake.calls)
    spec["out_dir"] = str(root / "elsewhere")
    run_study(_write_spec(root, spec), console=_quiet(root), report=False)
    assert len(fake.calls) == n  # nothing re-run


def test_limit_runs_at_most_n_arms_then_the_next_call_continues(setup):
    root, spec, fake = setup
    spec = {**spec, "students": ["kd_resnet10"], "methods": {"scratch": "scratch.yaml"}, "fractions": [1.0],
            "per_method_set": {}}
    spec.pop("teacher")
    path = _write_spec(root, spec)
    run_study(path, console=_quiet(root), report=False, limit=1)
    assert [c["run_dir"].rsplit("/", 1)[-1] for c in fake.calls] == ["s0"]
    run_study(path, console=_quiet(root), report=False, limit=1)
    assert [c["run_dir"].rsplit("/", 1)[-1] for c in fake.calls] == ["s0", "s1"]
    run_study(path, console=_quiet(root), report=False, limit=1)
    assert len(fake.calls) == 2
    assert "complete: all 2 run(s) done" in (root / "console.txt").read_text()


def test_seed_order_runs_every_method_at_a_seed_first(setup):
    root, spec, fake = setup
    spec = {**spec, "students": ["kd_resnet10"], "fractions": [1.0], "order": "seed"}
    run_study(_write_spec(root, spec), console=_quiet(root), report=False)
    arms = [c["run_dir"].split("/out/")[1] for c in fake.calls[1:]]
    # (the fixture's spec is written with sorted keys: kd before scratch)
    assert arms == ["kd/kd_resnet10/f1.0/s0", "scratch/kd_resnet10/f1.0/s0",
                    "kd/kd_resnet10/f1.0/s1", "scratch/kd_resnet10/f1.0/s1"]


def test_resuming_a_study_where_auto_precision_resolves_otherwise_is_refused(setup, monkeypatch):
    """Finished runs record the precision they trained in; when ``trainer.precision: auto``
    resolves to another on this machine (e.g. bf16-mixed on a CPU with AVX512-BF16 after fp32
    runs elsewhere), the study stops before training with the fix, instead of ending as two
    half-studies the report keeps apart. Pinning the precision lets it go on."""
    import segkd.engine.runtime as runtime

    root, spec, fake = setup
    spec = {**spec, "students": ["kd_resnet10"], "methods": {"scratch": "scratch.yaml"},
            "fractions": [1.0], "per_method_set": {}}
    spec.pop("teacher")
    done = root / "out" / "scratch" / "kd_resnet10" / "f1.0" / "s0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"precision": {"requested": "auto", "value": "32"}}))
    monkeypatch.setattr(runtime, "resolve_precision",
                        lambda p, acc, cpuinfo=None: ("bf16-mixed", "auto: the CPU computes bf16 natively")
                        if p == "auto" else (p, "set in the config"))
    path = _write_spec(root, spec)
    run_study(path, dry_run=True, console=_quiet(root))  # a dry run only warns
    assert "Pin it" in (root / "console.txt").read_text()
    with pytest.raises(ConfigError, match=r"precision 32 .*bf16-mixed.*trainer\.precision=32"):
        run_study(path, console=_quiet(root), report=False)
    assert fake.calls == []
    spec["set"] = spec["set"] + ["trainer.precision=32"]
    run_study(_write_spec(root, spec), console=_quiet(root), report=False)
    assert [c["run_dir"].endswith("s1") for c in fake.calls] == [True]
