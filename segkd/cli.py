"""The ``segkd`` command line: parse, build, run. No logic of its own."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .errors import SegkdError, user_message

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="segkd: knowledge distillation for semantic segmentation.")
out = Console()
err = Console(stderr=True, soft_wrap=True)
_DEBUG = {"on": False}

SetOpt = typer.Option(None, "--set", "-s", help="override a config key: key.sub=value (repeatable)")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars (CI logs)")) -> None:
    _DEBUG["on"] = debug
    if quiet:
        os.environ["SEGKD_QUIET"] = "1"


def _overrides(values: Optional[List[str]]) -> list[str]:
    extra = ["trainer.progress=false"] if os.environ.get("SEGKD_QUIET") else []
    return list(values or []) + extra


def _print_summary(run_dir: Path, summary: dict) -> None:
    from .report import summary_table

    out.print(summary_table(summary))
    out.print(f"run directory: [bold]{run_dir}[/bold]")


@app.command()
def train(config: Path = typer.Argument(..., help="YAML config"),
          set_: Optional[List[str]] = SetOpt,
          resume: Optional[Path] = typer.Option(None, "--resume", help="continue this run directory"),
          run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="exact run directory"),
          out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="parent of the run directory")) -> None:
    """Train a model (a recipe with one cross-entropy stage, or any recipe)."""
    from .runs import run_training

    rd, summary = run_training(str(config), _overrides(set_), str(run_dir) if run_dir else None,
                               str(resume) if resume else None, str(out_dir) if out_dir else None)
    _print_summary(rd, summary)


@app.command()
def distill(config: Path = typer.Argument(..., help="YAML recipe with a teacher"),
            set_: Optional[List[str]] = SetOpt,
            resume: Optional[Path] = typer.Option(None, "--resume"),
            run_dir: Optional[Path] = typer.Option(None, "--run-dir"),
            out_dir: Optional[Path] = typer.Option(None, "--out-dir")) -> None:
    """Distill a student from a teacher (same engine, run directory and resume as train)."""
    from .config import load_config

    if not resume and load_config(str(config), _overrides(set_)).teacher is None:
        raise SegkdError(f"{config}: a distillation recipe needs a `teacher:` section")
    train(config, set_, resume, run_dir, out_dir)


@app.command("eval")
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
    from .evaluation import evaluate_checkpoint
    from .report import metrics_table
    from .writable import check_output_file

    if json_out:
        check_output_file(json_out, "--json")
    m = evaluate_checkpoint(str(checkpoint), data_root, dataset, split, _pair(size), _pair(sliding, "--sliding"),
                            overlap, flip, [float(s) for s in scales.split(",")] if scales else [1.0],
                            batch_size)
    out.print(metrics_table(m, m.get("classes", [])))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(m, indent=2))


@app.command()
def predict(checkpoint: Path = typer.Argument(..., help="segkd checkpoint or .onnx"),
            inputs: Path = typer.Argument(..., help="an image or a folder"),
            out_dir: Path = typer.Option(..., "--out"),
            size: Optional[str] = typer.Option(None, "--size", help="H,W input resize"),
            fmt: str = typer.Option("color", "--format", help="color | ids | cityscapes | voc"),
            flip: bool = typer.Option(False, "--flip")) -> None:
    """Predict masks for images: colour masks and overlays (or benchmark-server PNGs)."""
    from .predict import predict_paths

    n = predict_paths(str(checkpoint), str(inputs), str(out_dir), _pair(size), fmt, flip)
    out.print(f"wrote predictions for {n} image(s) to {out_dir}")


@app.command()
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
    from .compare import LatencySetup
    from .describe import info_command

    setup = LatencySetup(device=device, dtype=dtype, batch=batch, channels_last=channels_last,
                         threads=threads)
    info_command(target, _pair(size), classes, paths, latency, compare or [], out,
                 onnx=onnx, data_root=data_root, setup=setup)


@app.command("list")
def list_(what: str = typer.Argument(..., help="models | encoders | datasets | losses | connectors"),
          pattern: str = typer.Option("*", "--pattern"),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="datasets: each one's layout and data.options")) -> None:
    """List registered names (like timm.list_models); losses and connectors with a summary."""
    from .describe import list_names, name_summary

    if verbose and what == "datasets":
        from .data.catalog import describe_dataset

        for name in list_names(what, pattern):
            out.print(describe_dataset(name), markup=False, highlight=False, soft_wrap=True)
        out.print("More in docs/datasets.md; check a tree with `segkd prepare NAME --root DIR`.")
        return
    for name in list_names(what, pattern):
        summary = name_summary(what, name)
        out.print(f"{name:<16} {summary}" if summary else name, markup=False, highlight=False,
                  soft_wrap=True)


@app.command()
def demo(out_dir: Path = typer.Option(Path("runs/demo"), "--out-dir"),
         epochs: int = typer.Option(0, "--epochs", help="override the demo's epochs (0 = default)"),
         quick: bool = typer.Option(False, "--quick", help="a tiny smoke run (seconds)")) -> None:
    """Teacher -> baseline student -> distilled student on the built-in synthetic data."""
    from .demo import run_demo

    run_demo(out_dir, epochs, quick, out)


@app.command("import-teacher")
def import_teacher(file: Path = typer.Argument(...),
                   fmt: str = typer.Option(..., "--format",
                                           help="jfzhang95-deeplabv3plus | nvidia-deepwv3plus"),
                   out_path: Path = typer.Option(..., "--out")) -> None:
    """Convert a published teacher checkpoint into a segkd checkpoint (strict load)."""
    from .models.teachers.importer import import_teacher as _imp

    _imp(str(file), fmt, str(out_path))
    out.print(f"wrote {out_path}")


def _pair(text: Optional[str], option: str = "--size") -> Optional[tuple[int, int]]:
    """``"H,W"`` / ``"HxW"`` / ``"S"`` -> (H, W) of positive integers; else one clear error."""
    if not text:
        return None
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise SegkdError(f"{option}: expected H,W (two positive integers, e.g. 512,1024), got '{text}'")
    return parts[0], parts[1]


def _register_extras() -> None:
    """Commands that live in their own modules (export, study, report, data tools)."""
    import importlib

    for mod in ("segkd.cli_export", "segkd.cli_data", "segkd.cli_study", "segkd.cli_cheap"):
        try:
            importlib.import_module(mod).register(app)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main() -> None:
    _register_extras()
    debug = "--debug" in sys.argv
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except SegkdError as e:
        if debug:
            raise
        from rich.markup import escape  # a message may hold "[...]" (lists, globs)

        err.print(f"[bold red]error:[/bold red] {escape(user_message(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 1))
    except Exception as e:  # usage errors (click's, or typer's vendored copy of click)
        if hasattr(e, "show") and hasattr(e, "exit_code") and not _DEBUG["on"]:
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
