"""``segkd study SPEC.yaml``: a grid of students x methods x data fractions x seeds.

One teacher serves every distillation arm: it is taken from ``teacher.checkpoint``, from a finished
``teacher.run_dir``, or trained once (in ``<out_dir>/teacher`` by default) from ``teacher.config``.
Its checkpoint is injected as ``teacher.checkpoint`` into every method config that has a
``teacher:`` section. Each arm runs in ``<out_dir>/<method>/<encoder>/f<fraction>/s<seed>``:
a directory with ``summary.json`` is done and skipped, one with ``last.pt`` but no summary is
resumed, the others are trained. Every run directory gets a ``study.json`` ({method, encoder,
fraction, seed}) that ``segkd report`` uses for grouping. Overrides: ``set`` applies to every run
(teacher included), ``teacher.set`` to the teacher only, ``per_method_set`` to one method.

Example::

    name: camvid-stagewise
    out_dir: runs/study
    teacher: {config: configs/camvid/unet_teacher.yaml}
    students: [kd_resnet10, kd_resnet18]
    methods: {scratch: configs/camvid/unet_scratch.yaml, stagewise: configs/camvid/stagewise.yaml}
    fractions: [1.0, 0.25]
    seeds: [0, 1, 2]
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from rich.console import Console
from rich.table import Table

from segkd.apps.runs import run_training
from segkd.apps.study_precision import check_precision
from segkd.config.loading import load_yaml
from segkd.config.schema import load_config
from segkd.config.strict import StrictModel
from segkd.core.checkpoint import resolve_checkpoint
from segkd.core.errors import ConfigError, SegkdError
from segkd.core.registry import suggest

_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
TEACHER_DIR = "teacher"


# ------------------------------------------------------------------------------------ schema
class TeacherSpec(StrictModel):
    config: Optional[str] = None  # a config to train the teacher from (once)
    run_dir: Optional[str] = None  # where it is / will be trained (default <out_dir>/teacher)
    checkpoint: Optional[str] = None  # an existing segkd checkpoint: nothing is trained
    seed: int = 0
    set: list[str] = []

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherSpec":
        if not (self.config or self.run_dir or self.checkpoint):
            raise ValueError("give `config` (to train it), `run_dir` or `checkpoint`")
        if self.checkpoint and (self.config or self.run_dir):
            raise ValueError("`checkpoint` excludes `config` and `run_dir`")
        return self


class StudySpec(StrictModel):
    name: str
    out_dir: str
    teacher: Optional[TeacherSpec] = None
    students: list[str] = Field(min_length=1)
    methods: dict[str, str] = Field(min_length=1)
    fractions: list[float] = Field([1.0], min_length=1)
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    set: list[str] = []
    per_method_set: dict[str, list[str]] = {}
    # A folder (e.g. under docs/results, committed) that receives each finished run's small files
    # (MIRRORED); a run found there counts as done, so a study resumed on another machine, from a
    # fresh checkout, continues instead of repeating finished runs.
    results_dir: Optional[str] = None
    # run order: "method" (every seed of a method, then the next method) or "seed" (every method
    # at the first seed, then the next seed: a study cut short still compares every method)
    order: Literal["method", "seed"] = "method"

    @field_validator("students", "seeds", "fractions")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate entries in {v}")
        return v

    @field_validator("students")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return [_check_label(s, "student") for s in v]

    @field_validator("methods")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for label in v:
            _check_label(label, "method label")
            if label == TEACHER_DIR:
                raise ValueError(f"'{TEACHER_DIR}' is reserved for the teacher's run directory")
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0.0 < f <= 1.0]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        return [float(f) for f in v]

    @model_validator(mode="after")
    def _per_method_known(self) -> "StudySpec":
        unknown = [k for k in self.per_method_set if k not in self.methods]
        if unknown:
            raise ValueError(f"per_method_set names unknown method(s) {unknown}; methods: "
                             f"{', '.join(self.methods)}")
        return self


def _check_label(text: str, what: str) -> str:
    if not _LABEL.match(text):
        raise ValueError(f"{what} '{text}' must start with a letter and use only letters, "
                         "digits, '_', '-', '.'")
    return text


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid study spec ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            model = TeacherSpec if e["loc"][:1] == ("teacher",) else StudySpec
            known = list(model.model_fields)
            msg = f"unknown key.{suggest(str(e['loc'][-1]), known)} Valid keys here: {', '.join(known)}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ loading
def _resolve(path: str, base: Path, what: str) -> str:
    """An existing file: absolute, relative to the current directory, or to the spec's folder;
    a relative path comes back relative to the current directory (run configs and summaries
    then name no absolute path of this machine)."""
    p = Path(path).expanduser()
    for cand in ([p] if p.is_absolute() else [p, base / p]):
        if cand.exists():
            return str(cand) if p.is_absolute() else os.path.relpath(cand.resolve())
    raise ConfigError(f"{what}: {path} not found (looked in {Path.cwd()} and {base})")


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec; config and checkpoint paths become absolute."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study spec not found: {path}")
    try:
        raw = load_yaml(path.read_text(), str(path)) or {}
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, str(path))) from None
    base = path.resolve().parent
    methods = {k: _resolve(v, base, f"methods.{k}") for k, v in spec.methods.items()}
    teacher = spec.teacher
    if teacher is not None:
        teacher = teacher.model_copy(update={
            "config": teacher.config and _resolve(teacher.config, base, "teacher.config"),
            "checkpoint": teacher.checkpoint and _resolve(teacher.checkpoint, base, "teacher.checkpoint")})
    return spec.model_copy(update={"methods": methods, "teacher": teacher})


# --------------------------------------------------------------------------------- planning
MIRRORED = ("summary.json", "metrics.jsonl", "study.json", "config.yaml")


def run_status(run_dir: Path, mirror: Optional[Path] = None) -> str:
    """done (summary.json here or in the results mirror), partial (last.pt, no summary) or todo."""
    if (run_dir / "summary.json").is_file() or (mirror is not None and (mirror / "summary.json").is_file()):
        return "done"
    return "partial" if (run_dir / "last.pt").is_file() else "todo"


@dataclass
class Arm:
    """One training run of the study (the teacher is an Arm with method 'teacher')."""
    method: str
    encoder: Optional[str]
    fraction: float
    seed: int
    config: Optional[str]
    overrides: list[str]
    run_dir: Path
    needs_teacher: bool = False
    mirror: Optional[Path] = None  # where the finished run's small files are copied

    @property
    def status(self) -> str:
        return run_status(self.run_dir, self.mirror)

    def copy_results(self) -> None:
        """Copy the finished run's small files (MIRRORED) into the results mirror, if any."""
        if self.mirror is None or not (self.run_dir / "summary.json").is_file():
            return
        self.mirror.mkdir(parents=True, exist_ok=True)
        for name in MIRRORED:
            src = self.run_dir / name
            if src.is_file():
                tmp = self.mirror / f".{name}.tmp"
                shutil.copyfile(src, tmp)
                os.replace(tmp, self.mirror / name)

    def record(self, study: str) -> dict:
        return {"study": study, "method": self.method, "encoder": self.encoder,
                "fraction": self.fraction, "seed": self.seed}


def teacher_arm(spec: StudySpec) -> Optional[Arm]:
    """The teacher run (None without a teacher, or when a fixed checkpoint is given)."""
    t = spec.teacher
    if t is None or t.checkpoint:
        return None
    run_dir = Path(t.run_dir) if t.run_dir else Path(spec.out_dir) / TEACHER_DIR
    overrides = spec.set + t.set + [f"seed={t.seed}"]
    encoder, fraction = None, 1.0
    if t.config:
        cfg = load_config(t.config, overrides)
        encoder, fraction = cfg.model.encoder, cfg.data.fraction
    return Arm(TEACHER_DIR, encoder, fraction, t.seed, t.config, overrides, run_dir)


def teacher_checkpoint(spec: StudySpec) -> Optional[Path]:
    """The checkpoint injected into distillation arms: the file ``teacher.checkpoint`` names (a
    run directory: its best.pt, else last.pt), else that of the teacher run."""
    if spec.teacher is None:
        return None
    if spec.teacher.checkpoint:
        return resolve_checkpoint(spec.teacher.checkpoint)
    return resolve_checkpoint(teacher_arm(spec).run_dir.resolve(), run_dir=True)


def _method_has_teacher(label: str, path: str, sets: list[str], injected: bool) -> bool:
    """Whether a method config distils (has a teacher section); checks it can get a teacher."""
    cfg = load_config(path, sets)
    if cfg.teacher is None:
        return False
    if not injected and cfg.teacher.checkpoint is None and cfg.teacher.model is None:
        raise ConfigError(f"method '{label}' ({path}) distils from a teacher but neither its config "
                          "nor the study spec (`teacher:`) says which")
    return True


def plan_arms(spec: StudySpec, teacher_ckpt: Optional[Path]) -> list[Arm]:
    """Every (method, student, fraction, seed) arm with its overrides and run directory."""
    arms = []
    for method, path in spec.methods.items():
        sets = spec.set + spec.per_method_set.get(method, [])
        distils = _method_has_teacher(method, path, sets, teacher_ckpt is not None)
        inject = [f"teacher.checkpoint={json.dumps(str(teacher_ckpt))}"] if distils and teacher_ckpt else []
        for enc, frac, seed in itertools.product(spec.students, spec.fractions, spec.seeds):
            over = sets + [f"model.encoder={enc}", f"seed={seed}", f"data.fraction={frac}",
                           f"name={method}-{enc}-f{frac}"] + inject
            load_config(path, over)  # fail now, not after hours of training
            rel = Path(method) / enc / f"f{frac}" / f"s{seed}"
            mirror = Path(spec.results_dir) / rel if spec.results_dir else None
            arms.append(Arm(method, enc, frac, seed, path, over, Path(spec.out_dir) / rel,
                            needs_teacher=bool(inject), mirror=mirror))
    if spec.order == "seed":  # stable: methods keep their order within a seed
        arms.sort(key=lambda a: spec.seeds.index(a.seed))
    return arms


# ---------------------------------------------------------------------------------- running
def run_arm(arm: Arm, study: str, extra: list[str]) -> str:
    """Train, resume or skip one arm; returns what was done (skipped / resumed / trained)."""
    status = arm.status
    if status == "done":
        return "skipped"
    arm.run_dir.mkdir(parents=True, exist_ok=True)
    (arm.run_dir / "study.json").write_text(json.dumps(arm.record(study), indent=2))
    if status == "partial":  # continue from last.pt with the config saved in the run directory
        run_training(None, list(extra), resume=str(arm.run_dir))
        arm.copy_results()
        return "resumed"
    if arm.config is None:
        raise ConfigError(f"{arm.run_dir} holds no finished run and the spec gives no config for it")
    run_training(arm.config, arm.overrides + list(extra), run_dir=str(arm.run_dir))
    arm.copy_results()
    return "trained"


def status_table(spec: StudySpec, arms: list[Arm]) -> Table:
    table = Table(title=f"study {spec.name}: {len(arms)} run(s)")
    for col in ("method", "encoder", "fraction", "seed", "status"):
        table.add_column(col)
    table.add_column("run directory", overflow="fold")
    colour = {"done": "green", "partial": "yellow", "todo": "white"}
    for a in arms:
        table.add_row(a.method, a.encoder or "-", f"{a.fraction:g}", str(a.seed),
                      f"[{colour[a.status]}]{a.status}[/]", str(a.run_dir))
    return table


def _run_all(spec: StudySpec, arms: list[Arm], extra: list[str], keep_going: bool,
             console: Console, limit: Optional[int] = None) -> list[str]:
    failures, ran = [], 0
    for i, arm in enumerate(arms, 1):
        if limit is not None and ran >= limit and arm.status != "done":
            console.print(f"stopping after {ran} run(s) (--limit); the rest stay for the next call")
            break
        console.print(f"[bold]({i}/{len(arms)})[/bold] {arm.method} {arm.encoder} "
                      f"f{arm.fraction:g} s{arm.seed}: {arm.status}")
        try:
            ran += run_arm(arm, spec.name, extra) != "skipped"
        except SegkdError as err:
            ran += 1
            if not keep_going:
                raise
            failures.append(f"{arm.run_dir}: {err}")
            console.print(f"[red]failed[/red]: {err}")
    return failures


def _shard(arms: list[Arm], shard: Optional[tuple[int, int]]) -> list[Arm]:
    if shard is None:
        return arms
    k, n = shard
    if not 0 <= k < n:
        raise ConfigError(f"--shard {k}/{n}: K must be in 0..{n - 1}")
    return arms[k::n]


def run_study(spec_path: str | Path, dry_run: bool = False, keep_going: bool = False,
              extra: Optional[list[str]] = None, report: bool = True,
              console: Optional[Console] = None, limit: Optional[int] = None,
              out_dir: Optional[str] = None, shard: Optional[tuple[int, int]] = None) -> list[Arm]:
    """Run (or, with ``dry_run``, list) every arm of a study; then report over its out_dir.
    ``limit``: train or resume at most that many arms, then stop (a machine shared in turns, or
    new code picked up between runs); finished arms are skipped as always. ``shard=(k, n)``:
    only the arms at positions k, k + n, k + 2n, ... of the plan (n processes share a study)."""
    console = console or Console()
    extra = list(extra or [])
    spec = load_spec(spec_path)
    if out_dir:
        spec = spec.model_copy(update={"out_dir": out_dir})
    teacher = teacher_arm(spec)
    plan = plan_arms(spec, teacher_checkpoint(spec))  # every arm: the precision check reads all
    arms = _shard(plan, shard)
    console.print(status_table(spec, ([teacher] if teacher else []) + arms))
    mixed = check_precision(spec.name, plan, extra)
    if dry_run:
        if mixed:
            console.print(f"[yellow]warning[/yellow]: {mixed}")
        return ([teacher] if teacher else []) + arms
    if mixed:
        raise ConfigError(mixed)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    if teacher is not None and any(a.needs_teacher and a.status != "done" for a in arms):
        console.print(f"[bold]teacher[/bold] ({teacher.status}): {teacher.run_dir}")
        run_arm(teacher, spec.name, extra)
        ckpt = teacher_checkpoint(spec)
        if not ckpt.is_file():
            raise SegkdError(f"the teacher run {teacher.run_dir} left no checkpoint ({ckpt})")
        arms = _shard(plan_arms(spec, ckpt), shard)
    if all(a.status == "done" for a in arms):
        console.print(f"study {spec.name} complete: all {len(arms)} run(s) done")
    failures = _run_all(spec, arms, extra, keep_going, console, limit)
    if report and any(out.rglob("summary.json")):
        from segkd.apps.report.tables import report as write_report

        write_report([out], out, plot=True, console=console)
        console.print(f"tables written to [bold]{out}[/bold] (results.md, results.csv, per_class.md)")
    if failures:
        raise SegkdError(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures))
    return ([teacher] if teacher else []) + arms
