"""The package's consoles, each made once: ``console`` (stdout: library code such as downloads and
dataset builders, and the command line's output) and ``errors`` (stderr: the command line's
``error: ...`` lines); and a plain printer."""
from __future__ import annotations

from rich.console import Console

console = Console()
errors = Console(stderr=True, soft_wrap=True)


def say(message: str) -> None:
    """Print a plain line (no rich markup: paths and errors may hold brackets)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)
