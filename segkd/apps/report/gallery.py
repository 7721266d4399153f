"""The report's prediction gallery: the same validation images through the teacher, the students
and the baseline, chosen where the teacher and the students disagree most, plus a few at random.

Models come from the runs' checkpoints (``segkd.load_model``), the images from the data the
first student was trained on (its config.yaml, through the pre-flight data check, as ``segkd
eval`` reads them). Masks are shown at the label size, in the dataset's class colours.
"""
from __future__ import annotations

import io
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from segkd.apps.report.analysis import Analysis
from segkd.apps.report.figures import data_uri
from segkd.apps.report.roles import BASELINE, STUDENT, checkpoint_of

MAX_STUDENTS = 4  # gallery columns for students (the best by mean); the table has them all
WIDTH = 224  # display width of a cell, pixels


def _columns(analysis: Analysis, notes: list[str]) -> list[tuple[str, object]]:
    """[(column label, checkpoint path)]: teacher, up to MAX_STUDENTS students, the baseline of
    the first; rows without a checkpoint are left out (named in ``notes``)."""
    teacher = analysis.teacher or {}
    cols: list[tuple[str, object]] = []
    t_row = analysis.row(teacher["key"]) if teacher else None
    if t_row is not None and not t_row.get("external"):
        path = next((c for r in analysis.groups[t_row["key"]] if (c := checkpoint_of(r))), None)
    else:
        path = teacher.get("checkpoint")
    if path:
        cols.append((f"teacher ({t_row['id'] if t_row else 'T'})", path))
    students = analysis.by_role(STUDENT)
    shown, missing = 0, []
    for row in students:
        path = next((c for r in analysis.groups[row["key"]] if (c := checkpoint_of(r))), None)
        if path is None:
            missing.append(row["id"])
        elif shown < MAX_STUDENTS:
            cols.append((f"{row['id']} {row['method']}", path))
            shown += 1
    if missing and shown:
        notes.append(f"not in the gallery (no checkpoint in the run directory): {', '.join(missing)}")
    if shown == MAX_STUDENTS and len(students) - len(missing) > shown:
        notes.append(f"the gallery shows the first {MAX_STUDENTS} students of the table")
    if shown and students:
        base_key = analysis.roles.baseline_of.get(students[0]["key"])
        b_row = analysis.row(base_key) if base_key else None
        path = b_row and next((c for r in analysis.groups[b_row["key"]] if (c := checkpoint_of(r))), None)
        if b_row is not None and path and b_row["role"] == BASELINE:
            cols.append((f"{b_row['id']} {b_row['method']}", path))
    return cols


def _dataset(analysis: Analysis):
    """The validation split the first student with a config was trained on."""
    from segkd.apps.eval_checkpoint import checkpoint_split

    for row in analysis.by_role(STUDENT) + analysis.rows:
        if row.get("external"):
            continue
        for run in analysis.groups[row["key"]]:
            cfg = run.get("config")
            if cfg and cfg.get("data"):
                split = (cfg["data"].get("val_split") or "val")
                return checkpoint_split({"config": cfg, "meta": {}}, split)[1], f"{cfg['data'].get('name')} {split}"
    return None, None


def _predict(model: torch.nn.Module, image: torch.Tensor, size: tuple[int, int], device) -> np.ndarray:
    with torch.inference_mode():
        logits = model(image.unsqueeze(0).to(device)).float()
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    img = Image.fromarray(rgb)
    if img.width > WIDTH:
        img = img.resize((WIDTH, max(1, round(img.height * WIDTH / img.width))), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue())


def _image_rgb(item: dict, ds, size: tuple[int, int]) -> np.ndarray:
    mean = torch.tensor(ds.mean).view(3, 1, 1)
    std = torch.tensor(ds.std).view(3, 1, 1)
    x = (item["image"] * std + mean).clamp(0, 1).unsqueeze(0)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def legend(classes: list[str]) -> list[dict]:
    """[{name, color: '#rrggbb'}] in the colours of segkd's masks (segkd predict's too)."""
    from segkd.data.submission import class_palette

    pal = class_palette(classes)
    return [{"name": c, "color": "#%02x%02x%02x" % tuple(int(v) for v in pal[i])}
            for i, c in enumerate(classes)]


def pick(disagreement: list[float], n: int, n_random: int, seed: int = 0) -> list[tuple[int, str]]:
    """(index, why) of ``n`` images: the largest disagreements, then ``n_random`` of the rest
    drawn with ``seed`` (fewer when there are not enough images)."""
    order = [int(i) for i in np.argsort(-np.asarray(disagreement), kind="stable")]
    n_random = min(n_random, max(0, len(order) - (n - n_random)))
    top = order[: max(0, n - n_random)]
    rest = [i for i in order if i not in top]
    rng = np.random.default_rng(seed)
    drawn = rng.choice(rest, size=min(n_random, len(rest)), replace=False) if rest else []
    return [(i, "largest disagreement") for i in top] + [(int(i), "random") for i in drawn]


def build_gallery(analysis: Analysis, n: int = 6, n_random: int = 2, scan: int = 200,
                  device: str = "cpu", seed: int = 0) -> tuple[Optional[dict], list[str]]:
    """(gallery or None, notes). The gallery: {columns, rows: [{name, why, disagreement, cells}],
    legend, data}; ``n`` images in all, ``n_random`` of them at random, the rest the largest
    teacher-student disagreement among the first ``scan`` images (evenly spaced)."""
    from segkd import load_model
    from segkd.data.submission import class_palette, colorize

    notes: list[str] = []
    cols = _columns(analysis, notes)
    if not cols or not cols[0][0].startswith("teacher") or len(cols) < 2:
        notes.append("prediction gallery skipped: it needs the checkpoints of the teacher and of "
                     "a student (results committed without checkpoints have neither)")
        return None, notes
    ds, what = _dataset(analysis)
    if ds is None:
        notes.append("prediction gallery skipped: no run has a config.yaml to read the data from")
        return None, notes
    dev = torch.device(device)
    models = [load_model(path)[0].to(dev) for _, path in cols]
    n_students = sum(1 for label, _ in cols[1:] if label.startswith("S"))
    idx = np.unique(np.linspace(0, len(ds) - 1, num=min(scan, len(ds))).round().astype(int))
    dis = []
    for i in idx:
        item = ds[int(i)]
        size = tuple(item["mask"].shape[-2:])
        preds = [_predict(m, item["image"], size, dev) for m in models[:1 + n_students]]
        dis.append(float(np.mean([(p != preds[0]).mean() for p in preds[1:]])))
    palette = class_palette(ds.classes)
    rows = []
    for j, why in pick(dis, n, n_random, seed):
        item = ds[int(idx[j])]
        size = tuple(item["mask"].shape[-2:])
        mask = item["mask"].numpy().astype(np.int64)
        cells = [_png(_image_rgb(item, ds, size)), _png(colorize(mask, palette))]
        cells += [_png(colorize(_predict(m, item["image"], size, dev), palette)) for m in models]
        rows.append({"name": str(item.get("name", idx[j])), "why": why, "disagreement": dis[j],
                     "cells": cells})
    return {"columns": ["image", "ground truth"] + [label for label, _ in cols], "rows": rows,
            "legend": legend(list(ds.classes)),
            "data": f"{what}: {len(idx)} of {len(ds)} images scanned"}, notes
