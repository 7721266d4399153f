"""Tiny real runs for the report tests: a teacher, a baseline and a KD student at two seeds,
trained for one epoch on 32x32 synthetic images (tests/conftest.py's tiny config)."""
from __future__ import annotations

from pathlib import Path

from conftest import tiny_cfg

KD_STAGE = [{"name": "kd", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3},
             "terms": [{"loss": "ce"}, {"loss": "kd"}]}]


def train(raw: dict, run_dir: Path) -> Path:
    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    Engine(config_from_dict(raw), run_dir).run()
    return run_dir


def train_runs(root: Path, student_seeds: tuple[int, ...] = (0, 1)) -> dict[str, Path]:
    """{"teacher", "baseline", "kd-s<seed>"...}: run directories under ``root``. The teacher
    (kd_resnet14) and the baseline (kd_resnet10, CE) are evaluated on val and test, the students
    (kd_resnet10, CE + KD from the teacher's best.pt) on val only."""
    both = {"eval": {"splits": ["val", "test"]}, "data": {"test_split": "test"}}
    runs = {"teacher": train(tiny_cfg(name="teacher", model={"encoder": "kd_resnet14"}, **both),
                             root / "teacher")}
    runs["baseline"] = train(tiny_cfg(name="baseline", **both), root / "baseline")
    for seed in student_seeds:
        runs[f"kd-s{seed}"] = train(tiny_cfg(name="kd", seed=seed, stages=KD_STAGE,
                                             teacher={"checkpoint": str(runs["teacher"] / "best.pt")}),
                                    root / f"kd-s{seed}")
    return runs


def shared_runs(tmp_path_factory) -> dict[str, Path]:
    """``train_runs`` once per test session (both report test modules use the same runs)."""
    import json

    root = tmp_path_factory.getbasetemp() / "report-runs"
    done = root / "runs.json"
    if not done.is_file():
        runs = train_runs(root)
        done.write_text(json.dumps({k: str(v) for k, v in runs.items()}))
    return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
