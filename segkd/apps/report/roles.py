"""Who is who in a report, read from the runs themselves: the teacher, the baselines, the students.

- a **student** distils from a teacher: its resolved config has a teacher that a loss term reads,
  or that the student starts from (``model.init_from: teacher``, ``model.from_teacher``);
- the **teacher** is a run trained without a teacher whose checkpoint a student learned from: its
  ``checkpoint_sha256`` (summary.json), or the sha256 of its best.pt / last.pt, is a student
  summary's ``teacher_sha256`` (summaries written before that field: the student's ``teacher``
  path is that checkpoint);
- every other run trained without a teacher is a **baseline**; a student is compared with the
  baseline of the same model and data fraction.

Roles belong to groups of seeds (``runs.group_runs``): a group holding a teacher run is
the teacher's group.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from segkd.core.errors import SegkdError

TEACHER, BASELINE, STUDENT = "teacher", "baseline", "student"
GroupKey = tuple[str, str, float]
CHECKPOINTS = ("best.pt", "last.pt")


def _reads_teacher(loss: object) -> bool:
    """Whether a loss reads the teacher, by its declared contract (an unknown loss: yes)."""
    from segkd.distill.losses import contract_of

    try:
        return contract_of(str(loss)).needs_teacher
    except SegkdError:
        return True


def distils(run: dict) -> bool:
    """Whether a run learned from a teacher (its resolved config; without config.yaml, whether
    its summary names a teacher)."""
    cfg = run.get("config")
    if cfg is None:
        return bool(run["summary"].get("teacher"))
    if not cfg.get("teacher"):
        return False
    model = cfg.get("model") or {}
    if model.get("init_from") == "teacher" or model.get("from_teacher"):
        return True
    return any(_reads_teacher(t.get("loss")) for st in cfg.get("stages") or []
               for t in st.get("terms") or [])


def checkpoint_of(run: dict) -> Optional[Path]:
    """The run's model file (best.pt, else last.pt), or None when the run directory holds none
    (e.g. results committed without checkpoints)."""
    for name in CHECKPOINTS:
        path = Path(run["dir"]) / name
        if path.is_file():
            return path
    return None


def _hashes(run: dict) -> set[str]:
    """The sha256 its summary recorded for its best.pt and those of the checkpoints it holds."""
    from segkd.core.checkpoint import sha256_file

    recorded = run["summary"].get("checkpoint_sha256")
    files = {sha256_file(Path(run["dir"]) / n) for n in CHECKPOINTS if (Path(run["dir"]) / n).is_file()}
    return files | ({recorded} if recorded else set())


def _paths(run: dict) -> set[Path]:
    d = Path(run["dir"]).resolve()
    return {d, *(d / n for n in CHECKPOINTS)}


def _teacher_path(student: dict) -> Optional[Path]:
    path = student["summary"].get("teacher")
    return Path(path).resolve() if path else None


@dataclass
class Roles:
    """``role``: group -> teacher | baseline | student; for each student group, ``teacher_of``
    (the teacher's group, when it is among the runs), ``teacher_runs`` (the runs it learned from)
    and ``baseline_of`` (the baseline group it is compared with); ``notes`` for the reader."""

    role: dict[GroupKey, str] = field(default_factory=dict)
    teacher_of: dict[GroupKey, GroupKey] = field(default_factory=dict)
    teacher_runs: dict[GroupKey, list[dict]] = field(default_factory=dict)
    baseline_of: dict[GroupKey, GroupKey] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def keys(self, role: str) -> list[GroupKey]:
        return [k for k, r in self.role.items() if r == role]


def _teachers_of(student: dict, candidates: list[dict], hashes: dict[str, set[str]]) -> list[dict]:
    """The runs among ``candidates`` (trained without a teacher) that ``student`` learned from."""
    digest = student["summary"].get("teacher_sha256")
    if digest:
        return [c for c in candidates if digest in hashes[c["dir"]]]
    path = _teacher_path(student)
    return [c for c in candidates if path is not None and path in _paths(c)]


def _pick_baseline(options: list[GroupKey], groups: dict[GroupKey, list[dict]]) -> GroupKey:
    """One baseline among several of a model: the one named 'ce', else the one with most seeds."""
    return sorted(options, key=lambda k: (k[1] != "ce", -len(groups[k]), k[1]))[0]


def assign_roles(groups: dict[GroupKey, list[dict]], baseline: Optional[str] = None) -> Roles:
    """Roles of the groups of runs (see the module docstring). ``baseline``: method names,
    comma-separated, that are the baselines whatever the runs say (``--baseline``)."""
    roles = Roles()
    group_of = {r["dir"]: k for k, g in groups.items() for r in g}
    runs = [r for g in groups.values() for r in g]
    students = {r["dir"] for r in runs if distils(r)}
    candidates = [r for r in runs if r["dir"] not in students]
    by_hash = any(r["summary"].get("teacher_sha256") for r in runs if r["dir"] in students)
    hashes = {c["dir"]: _hashes(c) for c in candidates} if by_hash else {}
    for key, group in groups.items():
        learned = [t for s in group if s["dir"] in students
                   for t in _teachers_of(s, candidates, hashes)]
        if any(s["dir"] in students for s in group):
            roles.role[key] = STUDENT
            unique = list({t["dir"]: t for t in learned}.values())
            if unique:
                roles.teacher_runs[key] = unique
                roles.teacher_of[key] = Counter(group_of[t["dir"]] for t in learned).most_common(1)[0][0]
    teachers = {k for k in roles.teacher_of.values()}
    for key in groups:
        roles.role.setdefault(key, TEACHER if key in teachers else BASELINE)
    if baseline:  # the named methods are the baselines, every other run is compared with them
        names = {b.strip() for b in baseline.split(",") if b.strip()}
        for key in groups:
            if roles.role[key] != TEACHER or key[1] in names:
                roles.role[key] = BASELINE if key[1] in names else STUDENT
    _link_baselines(roles, groups, explicit=bool(baseline))
    return roles


def _link_baselines(roles: Roles, groups: dict[GroupKey, list[dict]], explicit: bool) -> None:
    """Each student group's baseline: the baseline group of the same model and fraction."""
    by_model: dict[tuple[str, float], list[GroupKey]] = {}
    for key in roles.keys(BASELINE):
        by_model.setdefault((key[0], key[2]), []).append(key)
    for (model, frac), options in by_model.items():
        if len(options) > 1 and not explicit:
            chosen = _pick_baseline(options, groups)
            roles.notes.append(f"{model} at fraction {frac:g} has {len(options)} runs without a "
                               f"teacher ({', '.join(k[1] for k in options)}): compared with "
                               f"'{chosen[1]}' (--baseline names another)")
    for key in roles.keys(STUDENT):
        options = by_model.get((key[0], key[2]), [])
        if options:
            roles.baseline_of[key] = _pick_baseline(options, groups)
        else:
            roles.notes.append(f"{key[1]} ({key[0]}, fraction {key[2]:g}): no run of the same "
                               "model and fraction without a teacher: no Δ vs baseline")
