"""One report's numbers: each group of seeds with its role (teacher, baseline, student), its
scores, its comparison with its baseline and the share of the teacher-baseline gap it closes.

The teacher's score is that of the teacher run the students learned from (``roles``);
``teacher_score`` overrides it, and ``teacher_eval`` (a ``segkd eval --json`` file) stands in
for a teacher that is not among the runs (e.g. a shared or imported checkpoint).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from segkd.apps.report.roles import BASELINE, STUDENT, TEACHER, GroupKey, Roles, assign_roles
from segkd.apps.report.stats import compare
from segkd.core.errors import SegkdError

ROLE_ORDER = {TEACHER: 0, BASELINE: 1, STUDENT: 2}


@dataclass
class Analysis:
    """``rows``: one per group (``report.aggregate``'s row plus ``key``, ``role``, ``id``,
    ``cmp`` (the comparison row or None) and ``per_class``), teacher first, then baselines, then
    students by mean; ``teacher``: {label, score, per_class, classes, checkpoint, source} or None."""

    rows: list[dict]
    groups: dict[GroupKey, list[dict]]
    roles: Roles
    split: str
    metric: str
    teacher: Optional[dict] = None
    notes: list[str] = field(default_factory=list)
    latency: Optional[str] = None  # how latency was measured, in words (None: not measured)
    teacher_scores: dict[GroupKey, float] = field(default_factory=dict)  # gap shares' teacher

    def by_role(self, role: str) -> list[dict]:
        return [r for r in self.rows if r["role"] == role]

    def row(self, key: GroupKey) -> Optional[dict]:
        return next((r for r in self.rows if r["key"] == key), None)


def class_means(group: list[dict], split: str = "val") -> list[Optional[float]]:
    """Mean over seeds of each class's IoU (a seed where the class is absent is skipped)."""
    per_seed = [(r["summary"].get("splits") or {}).get(split, {}).get("per_class_iou") or []
                for r in group]
    width = max((len(p) for p in per_seed), default=0)
    means: list[Optional[float]] = []
    for c in range(width):
        vals = [p[c] for p in per_seed if c < len(p) and p[c] is not None]
        means.append(float(np.mean(vals)) if vals else None)
    return means


def read_teacher_eval(path: str | Path) -> dict:
    """A ``segkd eval --json`` file of the teacher: {mIoU, per_class_iou, classes, checkpoint, split}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SegkdError(f"--teacher-eval {path}: cannot read it ({err})") from None
    if not isinstance(data, dict) or "per_class_iou" not in data:
        raise SegkdError(f"--teacher-eval {path}: expected the JSON `segkd eval --json` writes "
                         "(mIoU, per_class_iou, classes, checkpoint)")
    return data


def _score(runs: list[dict], split: str, metric: str) -> Optional[float]:
    vals = [v for r in runs if (v := ((r["summary"].get("splits") or {}).get(split) or {}).get(metric))
            is not None]
    return float(np.mean(vals)) if vals else None


def _teacher_scores(roles: Roles, split: str, metric: str, override: Optional[float],
                    external: Optional[dict]) -> dict[GroupKey, float]:
    """The teacher score each group's share of the gap is computed against: ``override``, else
    the mean of the teacher runs the group learned from, else the one teacher of the report (the
    only teacher run the students name, or the external teacher's evaluation)."""
    found = {k: _score(runs, split, metric) for k, runs in roles.teacher_runs.items()}
    single = {v for v in found.values() if v is not None}
    default = override
    if default is None and len(single) == 1:
        default = single.pop()
    if default is None and external is not None and external.get("split", split) == split:
        default = external.get(metric)
    out: dict[GroupKey, float] = {}
    for key, role in roles.role.items():
        if role == TEACHER:
            continue
        score = override if override is not None else found.get(key)
        score = default if score is None else score
        if score is not None:
            out[key] = float(score)
    return out


def _comparison(groups, roles: Roles, baseline: Optional[str], scores: dict, split: str,
                metric: str) -> dict[GroupKey, dict]:
    """Comparison rows (segkd.apps.report.stats) of every non-teacher group, by group key."""
    others = {k: g for k, g in groups.items() if roles.role[k] != TEACHER}
    if baseline:
        bases: Any = baseline
    else:
        bases = {(k[0], k[2]): k[1] for k in set(roles.baseline_of.values())}
        if not bases:
            return {}
    rows = compare(others, bases, scores, split=split, metric=metric)
    return {(r["model"], r["method"], r["fraction"]): r for r in rows}


def _order(rows: list[dict]) -> list[dict]:
    def key(r: dict) -> tuple:
        mean = r[r["split_key"]][0] if r.get(r["split_key"]) else -math.inf
        return ROLE_ORDER[r["role"]], r["model"], -r["fraction"], -mean

    rows = sorted(rows, key=key)
    counts = {role: sum(r["role"] == role for r in rows) for role in ROLE_ORDER}
    seen = {role: 0 for role in ROLE_ORDER}
    for r in rows:
        seen[r["role"]] += 1
        letter = r["role"][0].upper()
        r["id"] = letter if counts[r["role"]] == 1 and r["role"] != STUDENT else f"{letter}{seen[r['role']]}"
    return rows


def _external_row(ext: dict, split: str, metric: str) -> dict:
    """A table row for a teacher known only from its evaluation file."""
    score = ext.get(metric) if ext.get("split", split) == split else None
    return {"key": ("teacher", "teacher", 1.0), "model": Path(str(ext.get("checkpoint") or "teacher")).name,
            "method": "teacher (segkd eval)", "fraction": 1.0, "n": 1, "seeds": [], "params": None,
            "role": TEACHER, "external": True, "classes": ext.get("classes") or [],
            "train": None, "val": None, "test": None, "train_n": 0, "val_n": 0, "test_n": 0,
            split: None if score is None else (float(score), float("nan")),
            f"{split}_n": 0 if score is None else 1, "selection": [], "split_key": split,
            "per_class": list(ext.get("per_class_iou") or []), "cmp": None}


def missing_seeds(groups: dict[GroupKey, list[dict]], roles: Roles) -> list[str]:
    """Notes for the groups of a study (runs with study.json; the teacher aside) that lack a seed
    the others have: a study not finished, or a failed run; their mean is over fewer seeds."""
    seeds = {k: {r["summary"].get("seed") for r in g} for k, g in groups.items()
             if roles.role[k] != TEACHER and all(r.get("study") for r in g)}
    everyone = set().union(*seeds.values()) if seeds else set()
    fmt = lambda s: ", ".join(map(str, sorted(s, key=str)))  # noqa: E731
    return [f"{k[1]} ({k[0]}, fraction {k[2]:g}): seed {fmt(everyone - have)} missing, mean over "
            f"n={len(have)} (the others have seeds {fmt(everyone)})"
            for k, have in seeds.items() if have < everyone]


def analyse(rows: list[dict], groups: dict[GroupKey, list[dict]], metric: str = "mIoU",
            split: str = "val", baseline: Optional[str] = None,
            teacher_score: Optional[float] = None, teacher_eval: Optional[dict] = None,
            notes: Optional[list[str]] = None) -> Analysis:
    """Roles, comparison and teacher of ``rows`` (``report.aggregate``'s, one per group of
    ``groups``); ``metric`` is the summary key compared (mIoU, per_image_iou, ...)."""
    roles = assign_roles(groups, baseline)
    scores = _teacher_scores(roles, split, metric, teacher_score, teacher_eval)
    cmp = _comparison(groups, roles, baseline, scores, split, metric)
    out = []
    for row in rows:
        key = (row["model"], row["method"], row["fraction"])
        out.append({**row, "key": key, "role": roles.role[key], "cmp": cmp.get(key),
                    "split_key": split, "per_class": class_means(groups[key], split)})
    teacher = None
    teachers = [r for r in out if r["role"] == TEACHER]
    if teachers:
        t = teachers[0]
        teacher = {"label": f"{t['model']} {t['method']}", "score": teacher_score if teacher_score
                   is not None else (t[split][0] if t.get(split) else None),
                   "per_class": t["per_class"], "classes": t["classes"], "source": "run",
                   "key": t["key"]}
    elif teacher_eval is not None:
        t = _external_row(teacher_eval, split, metric)
        out.append(t)
        teacher = {"label": t["model"], "score": teacher_score if teacher_score is not None
                   else (t[split][0] if t.get(split) else None), "per_class": t["per_class"],
                   "classes": t["classes"], "source": "eval", "key": t["key"],
                   "checkpoint": teacher_eval.get("checkpoint")}
    elif roles.keys(STUDENT):
        roles.notes.append("the teacher is not among the runs (pass its `segkd eval --json` file "
                           "with --teacher-eval, or its score with --teacher-score)")
    return Analysis(rows=_order(out), groups=groups, roles=roles, split=split, metric=metric,
                    teacher=teacher, teacher_scores=scores,
                    notes=list(notes or []) + roles.notes + missing_seeds(groups, roles))
