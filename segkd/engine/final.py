"""End of a run: evaluate the selected model on each split and write summary.json."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from segkd.config.schema import Config
from segkd.core.checkpoint import load_strict, read_checkpoint
from segkd.data import dataset_from_config
from segkd.engine.data import DataBundle, make_loader
from segkd.engine.state import Progress
from segkd.eval.evaluate import evaluate, inference_forward
from segkd.eval.inference import InferenceSpec
from segkd.models.cost import count_params


@dataclass
class FinishedRun:
    """What the end of a run reads, handed over by the Engine once its stages are done."""

    cfg: Config
    run_dir: Path
    fabric: Any  # the run's lightning Fabric: device, ranks, autocast, all_reduce
    student: nn.Module
    student_call: Callable[[torch.Tensor], torch.Tensor]  # images -> logits, for evaluation
    data: DataBundle
    workers: int  # loader workers per process
    meta: dict[str, Any]  # classes, num_classes, mean, std, ignore_index
    spec: dict[str, Any]  # the student's architecture spec
    replacements: list[dict]  # cheap-conv replacements applied, in order
    precision: dict[str, Any]  # requested, value, reason
    progress: Progress
    teacher_sha256: Optional[str]  # of the bytes the teacher was loaded from
    warnings: list[str]  # every warning the run gave, in order


def _split_dataset(run: FinishedRun, split: str):
    cfg = run.cfg.data
    if split == "val":
        return run.data.val
    if split == "test":
        return run.data.test
    if split == "select":
        return run.data.select
    if split == "train":  # the (fraction of the) training list, without augmentation
        ds = dataset_from_config(cfg, cfg.train_split)
        names = {p for p, _ in run.data.train.items}
        return ds.subset([i for i, (p, _) in enumerate(ds.items) if p in names])
    return dataset_from_config(cfg, split)


def final_summary(run: FinishedRun, wall: float) -> dict:
    """Load best.pt (if any) into the student, evaluate the configured splits, write summary."""
    f, cfg = run.fabric, run.cfg
    student = run.student
    best_path = run.run_dir / "best.pt"
    best_sha256 = None
    if best_path.is_file():
        best = read_checkpoint(best_path)
        load_strict(student, best.obj["state_dict"], str(best_path))
        best_sha256 = best.sha256
    e = cfg.eval
    spec = InferenceSpec(sliding_crop=e.sliding.crop if e.sliding else None,
                         overlap=e.sliding.overlap if e.sliding else 1 / 3, flip=e.flip, scales=e.scales)
    student.eval()
    splits = {}
    names = list(e.splits) + (["select"] if run.data.select is not None and "select" not in e.splits else [])
    for split in names:
        ds = _split_dataset(run, split)
        if ds is None:
            continue
        loader = make_loader(ds, cfg.data.eval_batch_size or cfg.data.batch_size, False, run.workers,
                             cfg.seed, f.world_size, f.global_rank, f.device.type == "cuda")
        with f.autocast():
            m = evaluate(inference_forward(run.student_call, spec), loader, run.meta["num_classes"],
                         run.meta["ignore_index"], f.device, cfg.trainer.channels_last,
                         per_image=e.per_image_iou,
                         reduce=(lambda t: f.all_reduce(t, reduce_op="sum")) if f.world_size > 1 else None)
        if cfg.task == "classification":  # 1x1 label maps: pixel accuracy is top-1 accuracy
            m["top1"] = m["pixel_acc"]
        splits[split] = m
    p = run.progress
    summary = {
        "name": cfg.name, "seed": cfg.seed, "model": run.spec, "classes": run.meta["classes"],
        "teacher": cfg.teacher.checkpoint if cfg.teacher else None,
        # the sha256 of the bytes the teacher was loaded from (its checkpoint, else its weights;
        # None without a file), never a later read of a file that may have changed since:
        # `segkd report` finds the teacher among the runs by it
        "teacher_sha256": run.teacher_sha256,
        # best.pt's sha256: a student whose teacher_sha256 it is learned from this run (found
        # by `segkd report` even where the checkpoints are not kept)
        "checkpoint_sha256": best_sha256,
        "fraction": cfg.data.fraction, "params": count_params(student),
        "replacements": run.replacements, "splits": splits,
        "selected": {"metric": cfg.stages[-1].select.metric, "value": p.best, "epoch": p.best_epoch,
                     "select_fraction": cfg.data.select_fraction,
                     "select_seed": cfg.data.select_seed if cfg.data.select_fraction else None},
        "wall_time_s": round(wall, 2), "train_time_s": round(p.train_time, 2),
        "train_images_per_s": round(p.images / max(p.train_time, 1e-9), 2),
        "device": f.device.type, "world_size": f.world_size, "torch": torch.__version__,
        "precision": run.precision,
        "host": platform.node(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "warnings": list(run.warnings),  # every warning the run gave, in order
    }
    if f.is_global_zero:
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
