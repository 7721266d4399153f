"""What every ``segkd`` command shares: the Typer app, the global flags, the output console and
the small argument parsers. Command modules import from here; nothing here imports them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from ..console import console as out
from ..errors import SegkdError

__all__ = ["app", "flags", "out", "SetOpt", "overrides", "pair", "print_summary"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
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
    """The ``--set`` values, plus ``trainer.progress=false`` under ``--quiet``."""
    extra = ["trainer.progress=false"] if flags.quiet else []
    return list(values or []) + extra


def print_summary(run_dir: Path, summary: dict) -> None:
    """The end-of-run table and the run directory."""
    from ..report import summary_table

    out.print(summary_table(summary))
    out.print(f"run directory: [bold]{run_dir}[/bold]")


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
