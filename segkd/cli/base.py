"""What every ``segkd`` command shares: the Typer app, the global flags, the output console and
the small argument parsers. Command modules import from here; nothing here imports them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperGroup

from segkd.core.console import console as out
from segkd.core.errors import SegkdError

__all__ = ["app", "flags", "out", "SetOpt", "overrides", "pair", "print_summary", "Interrupted",
           "checkpoint_arg"]


class Interrupted(Exception):
    """Ctrl-C while a command ran. Typer turns a KeyboardInterrupt into a silent exit 130 (older
    versions: an ``Abort``, exit 1); this carries it past Typer to ``main``, which says so."""


class _Group(TyperGroup):
    """The app's command group: a command's KeyboardInterrupt leaves as ``Interrupted``."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="segkd: knowledge distillation for semantic segmentation.")

SetOpt = typer.Option(None, "--set", "-s", help="override a config key: key.sub=value (repeatable)")


@dataclass
class Flags:
    """The root options, set by the app's callback on every invocation and passed down from here
    as explicit arguments (``quiet`` -> ``trainer.progress=false`` / ``progress=False``)."""

    quiet: bool = False
    debug: bool = False


flags = Flags()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars (CI logs)")) -> None:
    flags.debug, flags.quiet = debug, quiet


def overrides(values: Optional[List[str]]) -> list[str]:
    """The ``--set`` values (a key set twice to different values is an error), plus
    ``trainer.progress=false`` under ``--quiet``."""
    from segkd.config.loading import refuse_repeated

    refuse_repeated(list(values or []))
    extra = ["trainer.progress=false"] if flags.quiet else []
    return list(values or []) + extra


def print_summary(run_dir: Path, summary: dict) -> None:
    """The end-of-run table and the run directory."""
    from segkd.apps.report.tables import summary_table

    out.print(summary_table(summary))
    out.print(f"run directory: [bold]{run_dir}[/bold]")


EXPORTS = {".onnx": "an ONNX export", ".safetensors": "a safetensors export"}


def checkpoint_arg(path: Path | str, command: str) -> str:
    """A command's checkpoint argument as a string; an export file (.onnx / .safetensors) is
    refused with what ``segkd COMMAND`` takes (it would fail later as "not a PyTorch file")."""
    kind = EXPORTS.get(Path(path).suffix.lower())
    if kind:
        raise SegkdError(f"{path} is {kind}, not a checkpoint: segkd {command} takes a segkd "
                         "checkpoint (.pt, e.g. the best.pt it was exported from) or a run "
                         "directory; segkd predict runs an export")
    return str(path)


def pair(text: Optional[str], option: str = "--size") -> Optional[tuple[int, int]]:
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
