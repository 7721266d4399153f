"""``segkd train``, ``distill``, ``eval`` and ``predict``: run a recipe, score or apply a model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from segkd.cli.base import SetOpt, checkpoint_arg, out, overrides, pair, print_summary
from segkd.core.errors import SegkdError


def train(config: Path = typer.Argument(..., help="YAML config"),
          set_: Optional[List[str]] = SetOpt,
          resume: Optional[Path] = typer.Option(None, "--resume", help="continue this run directory"),
          run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="exact run directory"),
          out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="parent of the run directory")) -> None:
    """Train a model (a recipe with one cross-entropy stage, or any recipe)."""
    from segkd.apps.runs import run_training

    rd, summary = run_training(str(config), overrides(set_), str(run_dir) if run_dir else None,
                               str(resume) if resume else None, str(out_dir) if out_dir else None)
    print_summary(rd, summary)


def distill(config: Path = typer.Argument(..., help="YAML recipe with a teacher"),
            set_: Optional[List[str]] = SetOpt,
            resume: Optional[Path] = typer.Option(None, "--resume"),
            run_dir: Optional[Path] = typer.Option(None, "--run-dir"),
            out_dir: Optional[Path] = typer.Option(None, "--out-dir")) -> None:
    """Distill a student from a teacher (same engine, run directory and resume as train)."""
    from segkd.config.schema import load_config

    if not resume and load_config(str(config), overrides(set_)).teacher is None:
        raise SegkdError(f"{config}: a distillation recipe needs a `teacher:` section")
    train(config, set_, resume, run_dir, out_dir)


def eval_(checkpoint: Path = typer.Argument(..., help="segkd checkpoint (best.pt) or run dir"),
          data_root: Optional[str] = typer.Option(None, "--data-root"),
          dataset: Optional[str] = typer.Option(None, "--dataset", help="default: from the checkpoint"),
          split: str = typer.Option("val", "--split"),
          size: Optional[str] = typer.Option(None, "--size", help="H,W input resize"),
          sliding: Optional[str] = typer.Option(None, "--sliding", help="crop H,W for sliding window"),
          overlap: float = typer.Option(1 / 3, "--overlap"),
          flip: bool = typer.Option(False, "--flip"),
          scales: Optional[str] = typer.Option(None, "--scales", help="e.g. 0.75,1,1.25"),
          batch_size: int = typer.Option(4, "--batch-size"),
          json_out: Optional[Path] = typer.Option(None, "--json")) -> None:
    """Evaluate a checkpoint on a split: mIoU, per-class IoU, accuracies, per-image IoU."""
    from segkd.apps.eval_checkpoint import evaluate_checkpoint
    from segkd.apps.report.tables import metrics_table
    from segkd.core.writable import check_output_file

    if json_out:
        check_output_file(json_out, "--json")
    m = evaluate_checkpoint(checkpoint_arg(checkpoint, "eval"), data_root, dataset, split,
                            pair(size), pair(sliding, "--sliding"), overlap, flip,
                            [float(s) for s in scales.split(",")] if scales else [1.0], batch_size)
    out.print(metrics_table(m, m.get("classes", [])))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(m, indent=2))


def predict(checkpoint: Path = typer.Argument(..., help="segkd checkpoint or .onnx"),
            inputs: List[Path] = typer.Argument(..., help="images and/or folders of images"),
            out_dir: Path = typer.Option(..., "--out"),
            size: Optional[str] = typer.Option(None, "--size", help="H,W input resize"),
            fmt: str = typer.Option("color", "--format", help="color | ids | cityscapes | voc"),
            flip: bool = typer.Option(False, "--flip")) -> None:
    """Predict masks for images: colour masks and overlays with a legend of the class colours
    (legend.png), or benchmark-server PNGs."""
    from segkd.apps.predict import predict_paths

    n = predict_paths(str(checkpoint), [str(i) for i in inputs], str(out_dir), pair(size), fmt, flip)
    out.print(f"wrote predictions for {n} image(s) to {out_dir}")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``distill``, ``eval`` and ``predict`` to the ``segkd`` app."""
    app.command()(train)
    app.command()(distill)
    app.command("eval")(eval_)
    app.command()(predict)
