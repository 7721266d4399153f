"""Who is who in `segkd report`, from the runs themselves (tiny real runs: a teacher, a CE
baseline, a KD student at two seeds), the gap share against the teacher found, one seed shown
as n=1, a study with a missing seed, the 80-column terminal table, per-class ordering."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from tiny_report_runs import shared_runs

from segkd.apps.report.analysis import analyse
from segkd.apps.report.figures import loss_order
from segkd.apps.report.roles import BASELINE, STUDENT, TEACHER, assign_roles
from segkd.apps.report.runs import group_runs, load_runs
from segkd.apps.report.tables import aggregate, markdown_table
from segkd.apps.report.terminal import legend, terminal_table
from segkd.core.checkpoint import sha256_file

TEACHER_KEY = ("unet-kd_resnet14", "ce", 1.0)
BASE_KEY = ("unet-kd_resnet10", "ce", 1.0)
KD_KEY = ("unet-kd_resnet10", "ce+kd", 1.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def _render(*items) -> str:
    """What an 80-column terminal shows of ``items``."""
    console = Console(record=True, width=80, file=io.StringIO())
    for item in items:
        console.print(item)
    return console.export_text()


def _line(text: str, row_id: str) -> str:
    """The table line of the row ``row_id`` (T, B, S1, ...)."""
    return next(line for line in text.splitlines() if line.split()[:1] == [row_id])


def _analysis(runs, **kw):
    loaded = load_runs(list(runs.values()))
    return analyse(aggregate(loaded), group_runs(loaded), **kw), loaded


def test_the_teacher_is_found_by_the_hash_the_students_recorded(runs):
    summary = json.loads((runs["kd-s0"] / "summary.json").read_text())
    assert summary["teacher_sha256"] == sha256_file(runs["teacher"] / "best.pt")
    groups = group_runs(load_runs(list(runs.values())))
    roles = assign_roles(groups)
    assert roles.role == {TEACHER_KEY: TEACHER, BASE_KEY: BASELINE, KD_KEY: STUDENT}
    assert len(groups[KD_KEY]) == 2  # two seeds, one group
    assert roles.teacher_of[KD_KEY] == TEACHER_KEY and roles.baseline_of[KD_KEY] == BASE_KEY
    assert [r["dir"] for r in roles.teacher_runs[KD_KEY]] == [str(runs["teacher"].resolve())]


def test_summaries_without_the_hash_find_the_teacher_by_its_path(runs):
    loaded = load_runs(list(runs.values()))
    for run in loaded:
        run["summary"].pop("teacher_sha256", None)
    roles = assign_roles(group_runs(loaded))
    assert roles.role[TEACHER_KEY] == TEACHER and roles.teacher_of[KD_KEY] == TEACHER_KEY


def test_gap_share_is_computed_against_the_teacher_found(runs):
    analysis, loaded = _analysis(runs)
    teacher_val = json.loads((runs["teacher"] / "summary.json").read_text())["splits"]["val"]["mIoU"]
    assert analysis.teacher_scores[KD_KEY] == pytest.approx(teacher_val)
    assert [r["id"] for r in analysis.rows] == ["T", "B", "S1"]
    kd = analysis.row(KD_KEY)
    vals = [json.loads((runs[f"kd-s{s}"] / "summary.json").read_text())["splits"]["val"]["mIoU"]
            for s in (0, 1)]
    base = analysis.row(BASE_KEY)["val"][0]
    assert kd["n"] == 2 and kd["val"][0] == pytest.approx(sum(vals) / 2)
    assert kd["cmp"]["delta"] == pytest.approx(sum(vals) / 2 - base)
    gap = teacher_val - base
    assert kd["cmp"]["share"] == (pytest.approx(kd["cmp"]["delta"] / gap) if gap > 0 else None)
    # --teacher-score overrides the teacher found
    over, _ = _analysis(runs, teacher_score=0.99)
    assert over.row(KD_KEY)["cmp"]["share"] == pytest.approx(kd["cmp"]["delta"] / (0.99 - base))
    assert analysis.row(TEACHER_KEY)["cmp"] is None  # the teacher is not a second baseline


def test_one_seed_says_n_1_and_no_spread(runs):
    analysis, loaded = _analysis(runs)
    text = _render(terminal_table(analysis))
    base_line = _line(text, "B")
    assert "±" not in base_line and " 1 " in base_line
    kd_line = _line(text, "S1")
    assert "±" in kd_line and " 2 " in kd_line
    md = markdown_table(aggregate(loaded))
    assert "± 0.0000" not in md and "± nan" not in md


def test_a_run_without_a_test_split_shows_a_dash(runs):
    analysis, _ = _analysis(runs)
    kd, teacher = analysis.row(KD_KEY), analysis.row(TEACHER_KEY)
    assert kd["test"] is None and kd["test_n"] == 0 and teacher["test"] is not None
    text = _render(terminal_table(analysis))
    head = next(line for line in text.splitlines() if "method" in line)
    assert head.split()[:5] == ["id", "method", "n", "val", "test"]
    cells = _line(text, "S1").split()
    assert cells[cells.index("±") + 2] == "—"  # S1's test cell, after its val mean ± std


def test_the_terminal_table_fits_80_columns_with_latency(runs):
    analysis, _ = _analysis(runs)
    for i, row in enumerate(analysis.rows):
        row["latency_ms"] = 1234.5 + i
        row["method"] = row["method"] + " (stages.0.optimizer.lr=0.001, data.size=[96, 128])"
    analysis.latency = "PyTorch, cpu, fp32, batch 1, 1 thread(s), 32x32 (HxW)"
    text = _render(terminal_table(analysis), *legend(analysis))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # nothing cut: headers and names wrap instead
    head = next(line for line in text.splitlines() if line.lstrip().startswith("id"))
    for title in ("method", "val", "test", "Δ val", "gap", "params", "ms"):
        assert title in head
    assert "1234.5" in text and "ms: latency, PyTorch, cpu" in " ".join(text.split())
    assert "T   teacher: unet-kd_resnet14" in text


def _summary(method, seed, val):
    return {"name": f"{method}-s{seed}", "seed": seed, "params": 1000, "fraction": 1.0,
            "model": {"arch": "unet", "kwargs": {"encoder": "kd_resnet18"}}, "classes": ["a", "b"],
            "splits": {"val": {"mIoU": val, "per_class_iou": [val, val]}},
            "finished": f"2026-01-01 00:00:0{seed}"}


def test_a_study_with_a_missing_seed_says_so(tmp_path):
    for method, seeds in (("ce", (0, 1, 2)), ("kd", (0, 1, 2)), ("at", (0, 2))):
        for s in seeds:
            d = tmp_path / method / f"s{s}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(_summary(method, s, 0.3 + 0.01 * s)))
            (d / "study.json").write_text(json.dumps({"study": "x", "method": method, "seed": s}))
    loaded = load_runs([tmp_path])
    analysis = analyse(aggregate(loaded), group_runs(loaded), baseline="ce")
    at = analysis.row(("unet-kd_resnet18", "at", 1.0))
    assert at["n"] == 2 and at["seeds"] == [0, 2] and at["val"][0] == pytest.approx(0.31)
    missing = [n for n in analysis.notes if "missing" in n]
    assert missing == ["at (unet-kd_resnet18, fraction 1): seed 1 missing, mean over n=2 "
                       "(the others have seeds 0, 1, 2)"]
    assert at["cmp"]["verdict"] == "no difference"


def test_per_class_order_puts_what_the_student_lost_first():
    teacher = [0.9, 0.5, None, 0.7, 0.2]
    student = [0.2, 0.5, 0.3, 0.6, 0.4]
    # losses: 0.7, 0.0, unknown, 0.1, -0.2 (the student gained): biggest loss first, unknown last
    assert loss_order(teacher, student) == [0, 3, 1, 4, 2]
    assert loss_order([0.5, 0.5], [0.4, 0.4]) == [0, 1]  # ties keep class order


def test_segkd_report_compares_without_being_told_who_is_who(segkd, runs, tmp_path):
    proc = segkd("report", *map(str, runs.values()), "--out", str(tmp_path / "out"), "--no-latency")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines if line.split()[:1] in (["T"], ["B"], ["S1"])][:3] \
        == ["T", "B", "S1"]
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    assert "# Methods vs the 'ce' baseline (val mIoU)" in comparison
    assert "| unet-kd_resnet10 | 1 | ce+kd | 2 |" in comparison
    assert "unet-kd_resnet14" not in comparison  # the teacher is not compared as a baseline
    proc = segkd("report", str(runs["teacher"]), "--out", str(tmp_path / "o2"), "--screenshot")
    assert proc.returncode == 2 and "--screenshot needs --html" in proc.stderr


def test_configs_saved_by_an_older_segkd_read_as_today(tmp_path):
    """config.yaml is read through the current schema: a dump that spelt Adam's default betas out
    is the same config as one that leaves them unset, so their runs are one group, not two."""
    import yaml

    from segkd.apps.report.runs import _read_config
    from segkd.config.schema import Config

    today = Config().model_dump(mode="json")
    older = yaml.safe_load(yaml.safe_dump(today))
    older["stages"][0]["optimizer"].update(momentum=None, nesterov=None, betas=[0.9, 0.999])
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(today))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(older))
    assert _read_config(tmp_path / "a.yaml") == _read_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("stages: [{epochs: -3}]\n")  # refused by the schema: kept as written
    assert _read_config(tmp_path / "c.yaml") == {"stages": [{"epochs": -3}]}
