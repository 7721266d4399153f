"""``segkd demo``: the front door on the built-in synthetic data (about 12 minutes on 2 CPU cores).

1. train a teacher (UNet / kd_resnet18) on a synthetic street-like scene set;
2. ``segkd compress`` it to half its parameters with a CE-only baseline of the same student:
   the plan table of measured candidates, the student chosen and the recipe the evidence
   supports, both runs trained with the epoch chosen on a held-out share of train, the student
   exported (ONNX, parity checked; safetensors) and ``report.md``: teacher vs student vs
   baseline, mIoU, the share of the teacher's score kept, parameters, FLOPs and CPU latency.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from segkd.config.schema import config_from_dict, deep_merge

DATA = {"name": "synthetic", "batch_size": 8, "num_workers": 0, "hflip": True,
        "options": {"num_images": 96, "size": [64, 96]}}
QUICK_DATA = {"options": {"num_images": 8, "size": [64, 64]}, "batch_size": 4}
TRAIN = {"optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4},
         "schedule": {"name": "onecycle", "max_lr": 3e-3, "pct_start": 0.1}}
TEACHER = {"arch": "unet", "encoder": "kd_resnet18"}
TARGET = "0.5"  # of the teacher's parameters
STEPS = 300  # the student's (and the baseline's) optimiser steps: compress's floor


def demo_data(quick: bool) -> dict:
    return deep_merge(DATA, QUICK_DATA) if quick else DATA


def teacher_config(epochs: int, quick: bool) -> dict:
    """The teacher's run as a plain config dict (also written to its config.yaml)."""
    n = 1 if quick else (epochs or 48)  # 576 steps: a teacher that has converged
    return {"name": "demo-teacher", "data": demo_data(quick), "model": TEACHER,
            "trainer": {"log_every": 4, "threads": None}, "eval": {"splits": ["val"]},
            "stages": [{"name": "train", "epochs": n, "terms": [{"loss": "ce"}], **TRAIN}]}


def run_demo(out: Path, epochs: int = 0, quick: bool = False, console=None,
             quiet: bool = False) -> dict:
    """Train the teacher under ``out/teacher`` and compress it into ``out/compress``; returns the
    compress state (``compress.json``). A finished teacher is kept; a finished compress is
    reported again."""
    from rich.console import Console

    from segkd.apps.compress.plan import Target
    from segkd.apps.compress.run import Request, compress
    from segkd.engine import Engine

    console = console or Console(quiet=True)
    raw = teacher_config(epochs, quick)
    if quiet:
        raw = deep_merge(raw, {"trainer": {"progress": False}})
    teacher = out / "teacher"
    if (teacher / "summary.json").is_file():
        console.print(f"teacher: finished earlier ({teacher}), kept", highlight=False)
    else:
        console.rule(f"[bold]1. teacher[/bold]: {TEACHER['arch']} / {TEACHER['encoder']}")
        Engine(config_from_dict(raw, "demo/teacher"), teacher).run()
    data = out / "data.yaml"
    data.write_text(yaml.safe_dump({"data": demo_data(quick)}, sort_keys=False))
    console.rule(f"[bold]2. segkd compress[/bold] {teacher / 'best.pt'} --params {TARGET} --baseline")
    size = tuple(demo_data(quick)["options"]["size"])
    req = Request(teacher=str(teacher / "best.pt"), data=str(data), out=out / "compress",
                  target=Target(TARGET, None, "cpu", size), budget=str(8 if quick else STEPS),
                  baseline=True, resume=(out / "compress" / "compress.json").is_file(),
                  html=not quick, quiet=quiet)
    state = compress(req, console)
    console.print(f"everything in [bold]{out}[/bold]: the report {out / 'compress' / 'report.md'}, "
                  f"the student's recipe {out / 'compress' / 'student.yaml'}; "
                  f"TensorBoard: tensorboard --logdir {out}", highlight=False)
    return state
