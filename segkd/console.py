"""The package's one console for library code (downloads, dataset builders) and its plain printer."""
from __future__ import annotations

from rich.console import Console

console = Console()


def say(message: str) -> None:
    """Print a plain line (no rich markup: paths and errors may hold brackets)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)
