"""``segkd info``, ``list``, ``demo`` and ``import-teacher``: look at models and registries, try
the package, bring a published teacher in."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segkd.cli.base import flags, out, pair


def info(target: Optional[str] = typer.Argument(None, help="config.yaml, checkpoint, or arch:encoder"),
         size: str = typer.Option("512,512", "--size", help="H,W for FLOPs"),
         classes: int = typer.Option(21, "--classes", help="class count for arch:encoder"),
         paths: bool = typer.Option(False, "--paths", help="list module paths (for hooks/globs)"),
         compare: Optional[List[str]] = typer.Option(None, "--compare", help="TEACHER STUDENT"),
         latency: bool = typer.Option(False, "--latency"),
         onnx: bool = typer.Option(False, "--onnx", help="with --compare: onnxruntime latency too"),
         data_root: Optional[str] = typer.Option(None, "--data-root", help="with --compare: mIoU too"),
         device: str = typer.Option("cpu", "--device", help="latency on cpu or cuda"),
         dtype: str = typer.Option("fp32", "--dtype", help="latency precision: fp32, bf16, fp16 (GPU)"),
         batch: int = typer.Option(1, "--batch", help="latency batch size"),
         channels_last: bool = typer.Option(False, "--channels-last", help="latency in channels_last"),
         threads: Optional[int] = typer.Option(None, "--threads",
                                               help="CPU threads for latency (PyTorch and onnxruntime)")) -> None:
    """Parameters, FLOPs, latency and module paths of a model; or teacher vs student."""
    from segkd.apps.deploy_compare import LatencySetup
    from segkd.apps.describe import info_command

    setup = LatencySetup(device=device, dtype=dtype, batch=batch, channels_last=channels_last,
                         threads=threads)
    info_command(target, pair(size), classes, paths, latency, compare or [], out,
                 onnx=onnx, data_root=data_root, setup=setup)


def list_(what: str = typer.Argument(..., help="models | encoders | datasets | losses | connectors | "
                                                   "optimizers | schedules"),
          pattern: str = typer.Option("*", "--pattern"),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="datasets: each one's layout and data.options")) -> None:
    """List registered names (like timm.list_models); losses and connectors with a summary."""
    from segkd.apps.describe import list_names, name_summary

    if verbose and what == "datasets":
        from segkd.data.catalog import describe_dataset

        for name in list_names(what, pattern):
            out.print(describe_dataset(name), markup=False, highlight=False, soft_wrap=True)
        out.print("More in docs/datasets.md; check a tree with `segkd prepare NAME --root DIR`.")
        return
    for name in list_names(what, pattern):
        summary = name_summary(what, name)
        out.print(f"{name:<16} {summary}" if summary else name, markup=False, highlight=False,
                  soft_wrap=True)


def demo(out_dir: Path = typer.Option(Path("runs/demo"), "--out-dir"),
         epochs: int = typer.Option(0, "--epochs", help="the teacher's epochs (0 = default)"),
         quick: bool = typer.Option(False, "--quick", help="a tiny smoke run (seconds)")) -> None:
    """Train a teacher on the built-in synthetic data and `segkd compress` it: plan, distil,
    export, report."""
    from segkd.apps.demo import run_demo

    run_demo(out_dir, epochs, quick, out, quiet=flags.quiet)


def import_teacher(file: Path = typer.Argument(...),
                   fmt: str = typer.Option(..., "--format",
                                           help="jfzhang95-deeplabv3plus | nvidia-deepwv3plus"),
                   out_path: Path = typer.Option(..., "--out")) -> None:
    """Convert a published teacher checkpoint into a segkd checkpoint (strict load)."""
    from segkd.models.teachers.importer import import_teacher as _imp

    _imp(str(file), fmt, str(out_path))
    out.print(f"wrote {out_path}")


def register(app: typer.Typer) -> None:
    """Add ``info``, ``list``, ``demo`` and ``import-teacher`` to the ``segkd`` app."""
    app.command()(info)
    app.command("list")(list_)
    app.command()(demo)
    app.command("import-teacher")(import_teacher)
