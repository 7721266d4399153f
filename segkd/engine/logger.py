"""Run logging: metrics.jsonl, TensorBoard events and a rich progress bar (or quiet lines)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


class RunLogger:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; only on the main process."""

    def __init__(self, run_dir: Path | None, enabled: bool, progress: bool,
                 resume_step: int | None = None) -> None:
        """``resume_step``: a resumed run drops the rows its checkpoint did not reach (the
        interrupted epoch's steps are logged again), so every step appears once."""
        self.enabled = enabled and run_dir is not None
        self.progress_enabled = progress and enabled
        self._tb = None
        self._jsonl = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            if resume_step is not None:
                _drop_rows_after(Path(run_dir) / "metrics.jsonl", resume_step)
            self._jsonl = open(Path(run_dir) / "metrics.jsonl", "a")
        self._progress: Progress | None = None
        self._task = None

    def log(self, scalars: dict[str, float], step: int, **context: Any) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **context, **scalars}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for k, v in scalars.items():
            if isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, step)

    def info(self, msg: str) -> None:
        if self.enabled or self.progress_enabled:
            console.print(msg)

    def warn(self, msg: str, step: int, **context: Any) -> None:
        """Print ``warning: <msg>`` (stderr) and log it: a ``{"step", "time", ..., "warning"}``
        row of metrics.jsonl and a TensorBoard text entry."""
        if not self.enabled:
            return
        console.print(f"[yellow]warning:[/yellow] {escape(msg)}", highlight=False, soft_wrap=True)
        self._jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **context,
                                      "warning": msg}) + "\n")
        self._jsonl.flush()
        self._tb.add_text("warnings", msg, step)

    # ------------------------------------------------------------------ progress
    def start_epoch(self, title: str, total: int) -> None:
        if not self.progress_enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console,
            transient=False)
        self._progress.start()
        self._task = self._progress.add_task(title, total=total, status="")

    def advance(self, status: str | None = None) -> None:
        if self._progress is not None:
            if status is None:
                self._progress.advance(self._task)
            else:
                self._progress.update(self._task, advance=1, status=status)

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self.end_epoch()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite ``path`` (atomically) without the rows whose ``step`` is above ``step``; a row that
    is not JSON (cut by a kill mid-write) goes too."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    tmp.replace(path)


def epoch_line(title: str, row: dict[str, Any]) -> str:
    """The epoch's console line: ``title`` and every scalar of ``row``."""
    keys = [k for k in row if not isinstance(row[k], list)]
    return f"[cyan]{title}[/cyan] " + "  ".join(f"{k}={row[k]:.4g}" for k in keys)
