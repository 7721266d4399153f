"""``segkd demo``: the whole story on the built-in synthetic data, in minutes on 2 CPU cores.

1. train a teacher (UNet / kd_resnet18), 2. train a smaller student (UNet / kd_resnet10) from
scratch (baseline), 3. distill the same student from the teacher (CE + DIST on logits: on this
set pixel KD did not beat the baseline in our trials, DIST did; see docs/benchmarks.md),
4. print a table: val mIoU, parameters, GFLOPs and CPU latency of each.
"""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .config import config_from_dict, deep_merge

DATA = {"name": "synthetic", "batch_size": 8, "num_workers": 0, "hflip": True,
        "options": {"num_images": 96, "size": [96, 128]}}
TRAIN = {"optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4},
         "schedule": {"name": "onecycle", "max_lr": 3e-3, "pct_start": 0.1}}
TEACHER = {"arch": "unet", "encoder": "kd_resnet18"}
STUDENT = {"arch": "unet", "encoder": "kd_resnet10"}


def demo_configs(out: Path, epochs: int, quick: bool) -> dict[str, dict]:
    """The three runs as plain config dicts (also written to each run's config.yaml)."""
    data = deep_merge(DATA, {"options": {"num_images": 8, "size": [64, 64]}, "batch_size": 4}) if quick else DATA
    te, se = (1, 1) if quick else (epochs or 16, epochs or 12)
    base = {"data": data, "trainer": {"log_every": 4, "threads": None}, "eval": {"splits": ["val"]}}
    stage = lambda n, terms: {"name": "train", "epochs": n, "terms": terms, **TRAIN}  # noqa: E731
    ce = {"loss": "ce"}
    teacher = {**base, "name": "demo-teacher", "model": TEACHER, "stages": [stage(te, [ce])]}
    baseline = {**base, "name": "demo-baseline", "model": STUDENT, "stages": [stage(se, [ce])]}
    kd_terms = [ce, {"loss": "dist", "weight": 1.0}]
    distilled = {**base, "name": "demo-distilled", "model": STUDENT,
                 "teacher": {"checkpoint": str(out / "teacher" / "best.pt")},
                 "stages": [stage(se, kd_terms)]}
    return {"teacher": teacher, "baseline": baseline, "distilled": distilled}


def run_demo(out: Path, epochs: int = 0, quick: bool = False, console=None,
             quiet: bool = False) -> list[dict]:
    """Train the demo's three runs under ``out`` and return their table rows (``quiet``: no
    progress bars)."""
    from .engine import Engine
    from .models.profile import count_flops, measure_latency
    from .models.spec import load_model

    rows = []
    for label, raw in demo_configs(out, epochs, quick).items():
        if quiet:
            raw = deep_merge(raw, {"trainer": {"progress": False}})
        cfg = config_from_dict(raw, f"demo/{label}")
        if console:
            console.rule(f"[bold]{label}[/bold]: {cfg.model.arch} / {cfg.model.encoder}")
        summary = Engine(cfg, out / label).run()
        model = load_model(out / label / "best.pt")[0]
        size = tuple(cfg.data.options["size"])
        rows.append({"run": label, "model": f"{cfg.model.arch}/{cfg.model.encoder}",
                     "val mIoU": summary["splits"]["val"]["mIoU"], "params (M)": summary["params"] / 1e6,
                     "GFLOPs": count_flops(model, size) / 1e9,
                     "CPU latency (ms)": measure_latency(model, size, warmup=10, iters=20)["p50_ms"],
                     "train time (s)": summary["train_time_s"]})
    if console:
        console.print(demo_table(rows))
        gap = rows[2]["val mIoU"] - rows[1]["val mIoU"]
        console.print(f"teacher - baseline: {rows[0]['val mIoU'] - rows[1]['val mIoU']:+.3f} mIoU; "
                      f"distilled - baseline: {gap:+.3f} mIoU (one seed; latency: median of 20 runs)")
        console.print(f"runs in [bold]{out}[/bold]; TensorBoard: tensorboard --logdir {out}")
    return rows


def demo_table(rows: list[dict]) -> Table:
    t = Table(title="segkd demo (synthetic data, val split)")
    for k in rows[0]:
        t.add_column(k, justify="left" if k in ("run", "model") else "right", no_wrap=k in ("run", "model"))
    for r in rows:
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()])
    return t
