"""Where a stage-by-stage distilled student falls short of its teacher (``segkd stages``).

A stagewise run (kdsemseg; docs/methods.md) trains the student one part at a time to reproduce the
teacher's feature at that part's output. Its per-stage validation MSE alone does not say which
stage costs the student accuracy: MSE scales differ from layer to layer, and an error early on is
inherited by every later stage. Two measurements make it readable:

- relative MSE per stage: the student's val MSE at the stage's feature position (the student run
  end to end, as in training) divided by the variance of the teacher's feature there; 0 = the
  teacher's feature exactly, 1 = no better than predicting the feature's mean;
- transplants: the teacher with the student's modules of one stage put in (``alone``), and with
  the student's modules of that stage and of every stage before it (``prefix``). When teacher and
  student parts have the same interfaces (a UNet-R18 student of a UNet-R34 teacher), the drop of
  the teacher's mIoU caused by one stage's transplant is the accuracy that stage's approximation
  costs, and the ``prefix`` column shows where along the network the student's mIoU is lost.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

from segkd.apps.eval_checkpoint import checkpoint_split
from segkd.core.errors import SegkdError
from segkd.distill.recorder import Recorder
from segkd.engine.data import make_loader
from segkd.eval.evaluate import evaluate
from segkd.models.spec import model_from_checkpoint

__all__ = ["StageRow", "plan_stages", "stage_diagnosis", "transplant"]


@dataclass
class StageRow:
    """One stage of the plan: what it trains, how close the student's feature is, and the
    teacher's val mIoU with the student's modules of this stage (``alone``) or of stages 0..k
    (``prefix``) put in."""

    stage: str
    modules: list[str]
    position: Optional[str]
    mse: Optional[float]
    rel_mse: Optional[float]
    alone_miou: float
    prefix_miou: float


def plan_stages(config: dict) -> list[dict]:
    """The stages of a run's resolved config as ``{name, modules, student, teacher}``: the
    trainable module paths and the position of the stage's one feature (MSE) term, if any.
    Raises when the run has no stage with an explicit ``trainable`` list (not a stagewise plan)."""
    rows = []
    for i, st in enumerate(config.get("stages") or []):
        modules = list(st.get("trainable") or [])
        if not modules or any(any(c in m for c in "*?[") for m in modules):
            raise SegkdError(f"stage {i} ('{st.get('name', i)}') trains "
                             f"{modules or 'the whole student'}: `segkd stages` needs a plan whose "
                             "every stage names the modules it trains (stagewise, traditional)")
        hint = [t for t in st.get("terms") or []  # one-position feature terms (not logits, not lists)
                if isinstance(t.get("student"), str) and isinstance(t.get("teacher"), str)
                and "logits" not in (t["student"], t["teacher"])]
        term = hint[0] if hint else {}
        rows.append({"name": str(st.get("name", i)), "modules": modules,
                     "student": term.get("student"), "teacher": term.get("teacher"),
                     "student_hook": term.get("student_hook") or "output",
                     "teacher_hook": term.get("teacher_hook") or "output"})
    if not rows:
        raise SegkdError("the run's config has no stages")
    return rows


def transplant(teacher: nn.Module, student: nn.Module, paths: list[str]) -> nn.Module:
    """A copy of ``teacher`` whose modules at ``paths`` are copies of the student's."""
    hybrid = copy.deepcopy(teacher)
    for path in paths:
        try:
            part = student.get_submodule(path)
            hybrid.get_submodule(path)
        except AttributeError as e:
            raise SegkdError(f"module '{path}' is missing in the teacher or the student: {e}") from None
        hybrid.set_submodule(path, copy.deepcopy(part))
    return hybrid.eval()


@torch.no_grad()
def _feature_errors(student: nn.Module, teacher: nn.Module, stages: list[dict], loader,
                    device: torch.device) -> list[tuple[Optional[float], Optional[float]]]:
    """Per stage: (MSE, MSE / Var(teacher feature)) over the loader, both models end to end."""
    rec_s, rec_t = Recorder(student, "student"), Recorder(teacher, "teacher")
    keys = [(rec_s.add(s["student"], s["student_hook"]), rec_t.add(s["teacher"], s["teacher_hook"]))
            if s["student"] else None for s in stages]
    sums = [torch.zeros(4, dtype=torch.float64) for _ in stages]  # sq err, n, sum t, sum t^2
    try:
        for batch in loader:
            images = batch["image"].to(device)
            student(images)
            teacher(images)
            for key, acc in zip(keys, sums):
                if key is None:
                    continue
                s, t = rec_s.get(key[0]).float(), rec_t.get(key[1]).float()
                if s.shape != t.shape:
                    raise SegkdError(f"student feature {tuple(s.shape)} and teacher feature "
                                     f"{tuple(t.shape)} differ in shape: the stage compares them "
                                     "through a connector, which `segkd stages` does not model")
                acc += torch.stack([((s - t) ** 2).sum().double(), torch.tensor(float(t.numel()),
                                    dtype=torch.float64), t.sum().double(), (t ** 2).sum().double()])
    finally:
        rec_s.remove()
        rec_t.remove()
    out = []
    for key, (sq, n, st, st2) in zip(keys, sums):
        if key is None or n == 0:
            out.append((None, None))
            continue
        mse, var = float(sq / n), float(st2 / n - (st / n) ** 2)
        out.append((mse, mse / var if var > 0 else None))
    return out


def stage_diagnosis(student_path: str, teacher_path: str, data_root: Optional[str] = None,
                    split: str = "val", size: Optional[tuple[int, int]] = None,
                    batch_size: int = 8, device: Optional[str] = None) -> dict:
    """Relative feature MSE and transplant mIoU for every stage of a stagewise student.

    Returns ``{"student_miou", "teacher_miou", "stages": [StageRow as dict], "split", "images"}``.
    The data (dataset, root, size, normalisation) are the student run's unless overridden.
    """
    student, meta, ckpt = model_from_checkpoint(student_path)
    teacher, tmeta, _ = model_from_checkpoint(teacher_path)
    if meta.get("num_classes") and tmeta.get("num_classes") not in (None, meta["num_classes"]):
        raise SegkdError(f"the student predicts {meta['num_classes']} classes, the teacher "
                         f"{tmeta['num_classes']}")
    stages = plan_stages(ckpt.get("config") or {})
    _, ds = checkpoint_split(ckpt, split, data_root, None, size)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    student, teacher = student.to(dev).eval(), teacher.to(dev).eval()
    loader = make_loader(ds, batch_size, False, 0, 0)

    def miou(model: nn.Module) -> float:
        m = evaluate(lambda x, _m: {"logits": model(x)}, loader, ds.num_classes, ds.ignore_index,
                     dev, per_image=False)
        return float(m["mIoU"])

    errors = _feature_errors(student, teacher, stages, loader, dev)
    rows, done = [], []
    for st, (mse, rel) in zip(stages, errors):
        done += st["modules"]
        rows.append(StageRow(stage=st["name"], modules=st["modules"], position=st["student"],
                             mse=mse, rel_mse=rel,
                             alone_miou=miou(transplant(teacher, student, st["modules"])),
                             prefix_miou=miou(transplant(teacher, student, done))))
    return {"student_miou": miou(student), "teacher_miou": miou(teacher), "split": split,
            "images": len(ds), "stages": [asdict(r) for r in rows]}
