"""The package's consoles, each made once: ``console`` (stdout: library code such as downloads and
dataset builders, and the command line's output) and ``errors`` (stderr: the command line's
``error: ...`` lines); and a plain printer."""
from __future__ import annotations

import os
import sys

from rich.console import Console

# Output that goes to a file or a pipe (a log, CI) gets 120 columns instead of rich's 80, so that
# wide tables (the compress plan, the report) stay readable there; COLUMNS still decides if set.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120)
errors = Console(stderr=True, soft_wrap=True)


def say(message: str) -> None:
    """Print a plain line (no rich markup: paths and errors may hold brackets)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)
