"""``segkd study`` (a grid of runs) and ``segkd report`` (tables over runs)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .base import out, overrides


def study(spec: Path = typer.Argument(..., help="study spec YAML"),
          dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and their status only"),
          keep_going: bool = typer.Option(False, "--keep-going", help="continue after a failed run"),
          no_report: bool = typer.Option(False, "--no-report", help="skip the tables at the end"),
          limit: Optional[int] = typer.Option(None, "--limit", min=1, help="train or resume at most N "
                                              "runs, then stop (the next call continues)")) -> None:
    """Students x methods x data fractions x seeds with one teacher; resumable."""
    from ..study import run_study

    run_study(spec, dry_run=dry_run, keep_going=keep_going, extra=overrides(None),
              report=not no_report, console=out, limit=limit)


def report(run_dirs: List[Path] = typer.Argument(..., help="run directories or folders of runs"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where to write (default: first RUN_DIR)"),
           per_image: bool = typer.Option(False, "--per-image", help="kdsemseg per-image IoU, not mIoU"),
           sample_std: bool = typer.Option(False, "--sample-std", help="std with ddof=1 (default ddof=0)"),
           plot: bool = typer.Option(False, "--plot", help="also write size_vs_miou.png"),
           metric: str = typer.Option("mIoU", "--metric", help="mIoU | pixel_acc | mean_acc"),
           baseline: Optional[str] = typer.Option(None, "--baseline", help="method to compare every "
                                                  "other against (comparison.md: delta, 95% interval)"),
           teacher_score: Optional[float] = typer.Option(None, "--teacher-score", help="the teacher's "
                                                         "val score: adds the share of the gap closed")) -> None:
    """Mean ± std over seeds per (model, method, fraction): results.md, results.csv, per_class.md."""
    from ..report import report as write_report

    dest = out_dir or (run_dirs[0] if run_dirs[0].is_dir() else run_dirs[0].parent)
    written = write_report(run_dirs, dest, per_image=per_image, sample_std=sample_std, plot=plot,
                           metric=metric, console=out, baseline=baseline,
                           teacher_score=teacher_score)
    for path in written.values():
        out.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the ``study`` and ``report`` commands to the segkd CLI."""
    app.command("study")(study)
    app.command("report")(report)
