"""``segkd compress``: plan, write the recipe, train (resumable), export, report.

The output folder holds everything, each step skipped when its result is already there
(``--resume``): plan.json (the measured table and the choice), student.yaml (runnable with
``segkd distill``), baseline.yaml (``--baseline``), student/ and baseline/ (run directories with
best.pt), export/ (ONNX + safetensors, parity checked), report.md (and report.html when
``segkd report --html`` is available).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from segkd.apps.compress.candidates import Candidate, all_candidates
from segkd.apps.compress.plan import Target, choose, measure, measure_all, parse_budget, plan_table
from segkd.apps.compress.recipe import (
    Budget,
    baseline_config,
    flip_only,
    size_budget,
    student_config,
    terms_for,
)
from segkd.apps.compress.teacher import Teacher, load_teacher
from segkd.core.errors import SegkdError

SELECT_FRACTION = 0.1  # held out of train to choose the epoch (select/mIoU), never trained on


@dataclass
class Request:
    teacher: str
    data: str
    out: Path
    target: Target = field(default_factory=Target)
    budget: Optional[str] = None
    candidate: Optional[str] = None
    baseline: bool = False
    dry_run: bool = False
    resume: bool = False
    keep: str = "first"
    encoders: tuple[str, ...] = ()
    arch: Optional[str] = None
    encoder: Optional[str] = None
    classes: Optional[int] = None
    seed: int = 0
    latency: bool = True
    html: bool = True
    quiet: bool = False


@dataclass
class Planned:
    teacher: Teacher
    teacher_row: dict
    candidates: list[Candidate]
    chosen: Optional[Candidate]
    notes: list[str]
    data: dict


def data_section(arg: str) -> dict:
    """The ``data:`` section from a config file, or suggested for a folder dataset (as
    ``segkd prepare folder`` does); a held-out selection split is added."""
    from segkd.config.schema import load_config

    path = Path(arg)
    if path.is_dir():
        data = folder_data(path)
    elif path.is_file():
        data = load_config(path).data.model_dump(mode="json", exclude_defaults=True)
    else:
        raise SegkdError(f"--data {arg}: neither a config file nor a dataset folder")
    if data.get("root") and Path(data["root"]).exists():
        data["root"] = str(Path(data["root"]).resolve())
    data.setdefault("select_fraction", SELECT_FRACTION)
    return data


def folder_data(root: Path) -> dict:
    """The data section ``segkd prepare folder --root ROOT`` suggests (its findings must pass)."""
    from segkd.data.folder_setup import class_count, detect_layout, suggest_config, with_suggestions
    from segkd.data.prepare import prepare

    options = detect_layout(root, {})
    if not (options.get("classes") or (root / "classes.txt").is_file()):
        options["num_classes"] = class_count(prepare("folder", root, max_masks=50, **options), options)
    report = with_suggestions(prepare("folder", root, max_masks=500, **options), options)
    if not report.ok:
        raise SegkdError(f"{root}: the folder dataset has errors; run `segkd prepare folder --root "
                         f"{root} --config my.yaml` to see them and write a data config")
    return suggest_config(report, root, options)["data"]


def train_images(data: dict) -> tuple[int, int]:
    """(training images after the selection hold-out, classes) of a data section."""
    from segkd.config.schema import DataCfg
    from segkd.data import dataset_from_config

    ds = dataset_from_config(DataCfg(**data), data.get("train_split", "train"))
    held = int(round(len(ds) * (data.get("select_fraction") or 0)))
    return max(1, len(ds) - max(1 if data.get("select_fraction") else 0, held)), ds.num_classes


def make_plan(req: Request) -> Planned:
    """Load the teacher and the data, build and measure every candidate, choose one."""
    teacher = load_teacher(req.teacher, req.out, req.arch, req.encoder, req.classes)
    data = data_section(req.data)
    _, classes = train_images(data)
    if classes != teacher.num_classes:
        raise SegkdError(f"the teacher predicts {teacher.num_classes} classes, the data has "
                         f"{classes}: distillation needs the same classes")
    t = req.target
    row = measure(teacher.model, t.size, t.device, req.latency or t.latency_ms is not None)
    cands, notes = all_candidates(teacher, t.size, t.params_fraction(row["params"]),
                                  t.params_limit(row["params"]), req.keep, req.encoders)
    measure_all(cands, row, t, req.latency)
    chosen = None
    try:
        chosen = choose(cands, t, row["params"], req.candidate)
    except SegkdError as err:
        if not req.dry_run:
            raise
        notes.append(str(err))
    return Planned(teacher, row, cands, chosen, notes, data)


def step_seconds(c: Candidate, teacher: Teacher, data: dict) -> float:
    """Seconds per optimiser step of the student (teacher forward included), measured."""
    import torch

    size = tuple(data.get("size") or (256, 256))
    bs = int(data.get("batch_size", 8))
    student = c.build().train()
    opt = torch.optim.Adam(student.parameters(), 1e-3)
    x = torch.randn(bs, 3, *size)
    y = torch.randint(0, teacher.num_classes, (bs, *size))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            teacher.model(x)
        loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def budget_for(req: Request, p: Planned) -> Budget:
    steps, seconds = parse_budget(req.budget)
    n, _ = train_images(p.data)
    per_step = step_seconds(p.chosen, p.teacher, p.data) if seconds else None
    return size_budget(n, int(p.data.get("batch_size", 8)), steps, per_step, seconds)


def write_recipe(req: Request, p: Planned, budget: Budget) -> dict[str, Any]:
    """Write student.yaml (and baseline.yaml) into the output folder; returns the state."""
    c = p.chosen
    terms, reason = terms_for(c, c.build(), p.teacher.model)
    cache = flip_only(p.data)
    student = student_config(c, terms, p.data, str(p.teacher.path.resolve()), budget,
                             "compress-student", cache, str((req.out / "teacher-cache").resolve()),
                             req.seed)
    _write_yaml(req.out / "student.yaml", student, f"segkd compress: {c.name}. {reason}")
    state = {"teacher": str(p.teacher.path.resolve()), "teacher_model": p.teacher.describe(),
             "candidate": c.name, "kind": c.kind, "init": c.init, "reason": reason,
             "steps": budget.steps, "budget": budget.note, "teacher_cache": cache,
             "target": {"params": req.target.params, "latency_ms": req.target.latency_ms,
                        "device": req.target.device, "size": list(req.target.size)},
             "runs": {"student": "student.yaml"}}
    if req.baseline:
        _write_yaml(req.out / "baseline.yaml", baseline_config(c, student, "compress-baseline"),
                    f"segkd compress: the same student ({c.name}), CE only, random init, same budget")
        state["runs"]["baseline"] = "baseline.yaml"
    return state


def _write_yaml(path: Path, cfg: dict, comment: str) -> None:
    head = "".join(f"# {line}\n" for line in comment.split(". ") if line)
    path.write_text(head + yaml.safe_dump(cfg, sort_keys=False))


def plan_rows(p: Planned) -> list[dict]:
    return [{"name": c.name, "kind": c.kind, "init": c.init, "params": c.params, "flops": c.flops,
             "latency_ms": c.latency_ms, "meets": c.meets, "miss": c.miss,
             "chosen": c is p.chosen} for c in p.candidates]


def train_run(out: Path, name: str, quiet: bool, say) -> tuple[Path, dict]:
    """Train (or continue, or skip when finished) the run ``out/name`` from ``out/name.yaml``."""
    from segkd.apps.runs import run_training

    rd, over = out / name, (["trainer.progress=false"] if quiet else [])
    if (rd / "summary.json").is_file():
        say(f"{name}: finished earlier ({rd}), kept")
        return rd, json.loads((rd / "summary.json").read_text())
    if (rd / "last.pt").is_file():
        say(f"{name}: resuming {rd}")
        return run_training(str(out / f"{name}.yaml"), over, resume=str(rd))
    say(f"{name}: training ({out / f'{name}.yaml'})")
    return run_training(str(out / f"{name}.yaml"), over, run_dir=str(rd))


def compress(req: Request, console) -> dict:
    """The whole command; returns the state written to ``out/compress.json``."""
    say = lambda m: console.print(m, highlight=False)  # noqa: E731
    state_path = req.out / "compress.json"
    if state_path.is_file() and not req.resume and not req.dry_run:
        raise SegkdError(f"{req.out} holds a compress run (compress.json): continue it with "
                         "--resume, or choose another --out")
    if req.resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        say(f"resuming {req.out}: {state['candidate']} ({state['budget']})")
    else:
        if req.resume:
            say(f"{req.out}: nothing to resume (no compress.json), starting")
        req.out.mkdir(parents=True, exist_ok=True)
        p = make_plan(req)
        console.print(plan_table(p.teacher_row, p.candidates, p.chosen,
                                 f"{p.teacher.describe()} -> candidates; target: "
                                 f"{req.target.describe(p.teacher_row['params'])}"))
        for n in p.notes:
            say(f"note: {n}")
        if p.chosen is not None:
            say(f"chosen: {p.chosen.name} ({p.chosen.kind}; starts from {p.chosen.init})")
        (req.out / "plan.json").write_text(json.dumps(
            {"teacher": p.teacher_row, "candidates": plan_rows(p)}, indent=2))
        if req.dry_run or p.chosen is None:
            return {"plan": plan_rows(p), "chosen": p.chosen.name if p.chosen else None}
        budget = budget_for(req, p)
        state = write_recipe(req, p, budget)
        say(f"recipe: {state['reason']}")
        say(f"budget: {budget.note}; epoch chosen on a held-out {SELECT_FRACTION:.0%} of train "
            f"(select/mIoU); teacher cache {'on' if state['teacher_cache'] else 'off (random transforms)'}")
        state_path.write_text(json.dumps(state, indent=2))
    from segkd.apps.compress.report import finish

    for name in state["runs"]:
        rd, summary = train_run(req.out, name, req.quiet, say)
        state.setdefault("summaries", {})[name] = str(rd / "summary.json")
    state.update(finish(req, state, console))
    state_path.write_text(json.dumps(state, indent=2))
    return state
