"""``segkd study`` (a grid of runs), ``segkd report`` (tables over runs) and ``segkd stages``
(where a stagewise student loses accuracy)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segkd.cli.base import out, overrides
from segkd.core.errors import SegkdError


def study(spec: Path = typer.Argument(..., help="study spec YAML"),
          dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and their status only"),
          keep_going: bool = typer.Option(False, "--keep-going", help="continue after a failed run"),
          no_report: bool = typer.Option(False, "--no-report", help="skip the tables at the end"),
          limit: Optional[int] = typer.Option(None, "--limit", min=1, help="train or resume at most N "
                                              "runs, then stop (the next call continues)"),
          out_dir: Optional[str] = typer.Option(None, "--out-dir", help="where the runs go "
                                                "(default: the spec's out_dir, relative to the "
                                                "current directory)"),
          shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only every N-th run from "
                                              "the K-th (0-based), so that N processes share a "
                                              "study")) -> None:
    """Students x methods x data fractions x seeds with one teacher; resumable."""
    from segkd.apps.study import run_study

    run_study(spec, dry_run=dry_run, keep_going=keep_going, extra=overrides(None),
              report=not no_report, console=out, limit=limit, out_dir=out_dir,
              shard=_parse_shard(shard))


def _parse_shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    from segkd.core.errors import ConfigError

    if value is None:
        return None
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {value!r}: expected K/N, e.g. 0/2") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"--shard {value}: expected 0 <= K < N")
    return k, n


def report(run_dirs: List[Path] = typer.Argument(..., help="run directories or folders of runs"),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="where to write (default: first RUN_DIR)"),
           per_image: bool = typer.Option(False, "--per-image", help="kdsemseg per-image IoU, not mIoU"),
           sample_std: bool = typer.Option(False, "--sample-std", help="std with ddof=1 (default ddof=0)"),
           plot: bool = typer.Option(False, "--plot", help="also write size_vs_miou.png (and "
                                     "latency_vs_miou.png when latency is measured)"),
           metric: str = typer.Option("mIoU", "--metric", help="mIoU | pixel_acc | mean_acc"),
           baseline: Optional[str] = typer.Option(None, "--baseline", help="method(s) every other run "
                                                  "is compared against (default: the runs trained "
                                                  "without a teacher); a,b: each model against the "
                                                  "one it has"),
           teacher_score: Optional[float] = typer.Option(None, "--teacher-score", help="override the "
                                                         "teacher's val score (default: the teacher "
                                                         "run found among RUN_DIRS)"),
           teacher_eval: Optional[Path] = typer.Option(None, "--teacher-eval", help="the teacher's "
                                                       "`segkd eval --json` file, for a teacher that "
                                                       "is not among the runs"),
           html: Optional[Path] = typer.Option(None, "--html", help="also write this one-file HTML "
                                               "page (tables, per-class IoU, predictions, curves, "
                                               "plots, configs)"),
           screenshot: bool = typer.Option(False, "--screenshot", help="with --html: a PNG of the "
                                           "page beside it (headless Chromium)"),
           latency: Optional[bool] = typer.Option(None, "--latency/--no-latency", help="measure each "
                                                  "model's latency (default: with --html)"),
           device: str = typer.Option("cpu", "--device", help="latency and gallery device"),
           threads: int = typer.Option(1, "--threads", help="CPU threads while measuring latency"),
           size: Optional[str] = typer.Option(None, "--size", help="H,W latency input (default: "
                                              "the runs' input size)"),
           gallery: int = typer.Option(6, "--gallery", help="validation images in the HTML "
                                       "prediction gallery (0: none)")) -> None:
    """Tables over runs: the teacher, baselines and students found from the runs themselves,
    mean ± std over seeds, Δ vs baseline and the share of the teacher gap (results.md,
    results.csv, per_class.md, comparison.md), latency, and with --html one page to look at."""
    from segkd.apps.deploy_compare import LatencySetup
    from segkd.apps.report.tables import report as write_report
    from segkd.cli.base import pair

    if screenshot and not html:
        raise SegkdError("--screenshot needs --html OUT.html (the screenshot is written beside it)")
    dest = out_dir or (run_dirs[0] if run_dirs[0].is_dir() else run_dirs[0].parent)
    written = write_report(run_dirs, dest, per_image=per_image, sample_std=sample_std, plot=plot,
                           metric=metric, console=out, baseline=baseline,
                           teacher_score=teacher_score, teacher_eval=teacher_eval, html=html,
                           screenshot=screenshot, latency=latency,
                           setup=LatencySetup(device=device, threads=threads), size=pair(size),
                           gallery=gallery, device=device)
    for path in written.values():
        out.print(f"wrote {path}")


def stages(student: Path = typer.Argument(..., help="the stagewise run's checkpoint (best.pt)"),
           teacher: Path = typer.Option(..., "--teacher", help="the teacher's segkd checkpoint"),
           data_root: Optional[str] = typer.Option(None, "--data-root", help="default: the run's"),
           split: str = typer.Option("val", "--split"),
           size: Optional[str] = typer.Option(None, "--size", help="H,W (default: the run's)"),
           device: Optional[str] = typer.Option(None, "--device"),
           json_out: Optional[Path] = typer.Option(None, "--json", help="also write the rows here")) -> None:
    """Per stage of a stagewise student: relative feature MSE, and the teacher's mIoU with that
    stage's student modules put in (alone, and with every earlier stage's)."""
    import json

    from rich.table import Table

    from segkd.apps.stages import stage_diagnosis
    from segkd.cli.base import checkpoint_arg, pair
    from segkd.core.writable import check_output_file

    if json_out:  # a path that cannot be written fails now, not after the evaluations
        check_output_file(json_out, "--json")
    res = stage_diagnosis(checkpoint_arg(student, "stages"), checkpoint_arg(teacher, "stages"),
                          data_root, split, pair(size), device=device)
    table = Table(title=f"{split} ({res['images']} images): teacher mIoU {res['teacher_miou']:.4f}, "
                        f"student {res['student_miou']:.4f}")
    for col in ("stage", "feature", "MSE", "rel. MSE", "teacher + this stage", "teacher + stages <= this"):
        table.add_column(col, justify="left" if col in ("stage", "feature") else "right",
                         overflow="fold")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in res["stages"]:
        table.add_row(r["stage"], r["position"] or "-", fmt(r["mse"], ".4g"), fmt(r["rel_mse"], ".3f"),
                      f"{r['alone_miou']:.4f}", f"{r['prefix_miou']:.4f}")
    out.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(res, indent=1) + "\n")
        out.print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    """Add the ``study``, ``report`` and ``stages`` commands to the segkd CLI."""
    app.command("study")(study)
    app.command("report")(report)
    app.command("stages")(stages)
