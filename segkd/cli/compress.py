"""``segkd compress``: a teacher and a dataset in, a small exported student and a report out."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segkd.cli.base import flags, out, pair


def compress(teacher: str = typer.Argument(..., help="segkd checkpoint or run dir, or a state "
                                                     "dict with --arch/--encoder/--classes"),
             data: str = typer.Option(..., "--data", help="data config (YAML) or a folder dataset"),
             out_dir: Path = typer.Option(Path("runs/compress"), "--out", help="output folder"),
             params: Optional[str] = typer.Option(None, "--params",
                                                  help="at most: a fraction of the teacher's (0.5) or a count (2M)"),
             latency_ms: Optional[float] = typer.Option(None, "--latency-ms", help="at most, measured"),
             device: str = typer.Option("cpu", "--device", help="latency device: cpu | cuda"),
             size: str = typer.Option("256,256", "--size", help="H,W for FLOPs and latency"),
             budget: Optional[str] = typer.Option(None, "--budget",
                                                  help="optimiser steps (2000) or time (30m, 2h)"),
             candidate: Optional[str] = typer.Option(None, "--candidate", help="train this row of the plan"),
             baseline: bool = typer.Option(False, "--baseline", help="also train the student with CE only"),
             dry_run: bool = typer.Option(False, "--dry-run", help="stop after the plan table"),
             resume: bool = typer.Option(False, "--resume", help="continue the run in --out"),
             keep: str = typer.Option("first", "--keep-blocks", help="cut: first | even"),
             encoder_opt: Optional[List[str]] = typer.Option(None, "--try-encoder",
                                                             help="another encoder candidate (repeatable)"),
             arch: Optional[str] = typer.Option(None, "--arch", help="state-dict teacher: architecture"),
             encoder: Optional[str] = typer.Option(None, "--encoder", help="state-dict teacher: encoder"),
             classes: Optional[int] = typer.Option(None, "--classes", help="state-dict teacher: classes"),
             latency: bool = typer.Option(True, "--latency/--no-latency", help="measure every candidate"),
             html: bool = typer.Option(True, "--html/--no-html", help="also write report.html"),
             seed: int = typer.Option(0, "--seed")) -> None:
    """Compress a teacher: measure candidate students against a target, train the chosen one with
    the recipe the evidence supports, export it and report teacher vs student."""
    from segkd.apps.compress.plan import Target
    from segkd.apps.compress.run import Request
    from segkd.apps.compress.run import compress as run

    hw = pair(size) or (256, 256)
    req = Request(teacher=teacher, data=data, out=out_dir,
                  target=Target(params, latency_ms, device, hw), budget=budget, candidate=candidate,
                  baseline=baseline, dry_run=dry_run, resume=resume, keep=keep,
                  encoders=tuple(encoder_opt or ()), arch=arch, encoder=encoder, classes=classes,
                  seed=seed, latency=latency, html=html, quiet=flags.quiet)
    run(req, out)


def register(app: typer.Typer) -> None:
    """Add ``compress`` to the ``segkd`` app."""
    app.command()(compress)
