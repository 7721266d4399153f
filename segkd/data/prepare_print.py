"""``segkd prepare``'s report on the terminal: :func:`print_report` renders a
:class:`segkd.data.prepare.PrepareReport` as rich tables (splits, mask values, findings,
suggestions, verdict)."""
from __future__ import annotations

import json
from collections import Counter

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from segkd.data.prepare import PrepareReport, SplitReport


def _value_rows(report: PrepareReport, limit: int = 40) -> list[tuple[str, str, str, str]]:
    """(value, meaning, pixels, share) rows of the merged histogram, most frequent first."""
    hist = Counter()
    for rep in report.splits:
        hist.update(rep.histogram)
    total, n = sum(hist.values()) or 1, len(report.classes)
    rows = []
    for v, count in hist.most_common(limit):
        i = v if report.label_map is None else report.label_map.get(v, report.ignore_index)
        meaning = (f"{i} {report.classes[i]}" if 0 <= i < n else
                   "ignore" if i == report.ignore_index else "[red]outside the classes[/red]")
        rows.append((str(v), meaning, f"{count:,}", f"{100 * count / total:.2f}%"))
    return rows


def _sizes(rep: SplitReport) -> str:
    """"HxW", or "HxW..HxW" (smallest..largest) when the images differ."""
    if rep.size_min is None or rep.size_max is None:
        return "-"
    lo, hi = (f"{h}x{w}" for h, w in (rep.size_min, rep.size_max))
    return lo if lo == hi else f"{lo}..{hi}"


def print_report(report: PrepareReport, console: Console | None = None) -> None:
    """Render ``report`` as rich tables: splits, mask values, findings, suggestions, verdict."""
    console = console or Console()
    table = Table(title=f"{report.name}: {report.root}")
    for col in ("split", "images", "masks", "pairs", "no mask", "no img", "bad", "HxW", "checked"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for r in report.splits:
        table.add_row(escape(r.split), str(r.images), str(r.masks), str(r.pairs),
                      str(len(r.images_without_masks)), str(len(r.masks_without_images)),
                      str(len(r.unreadable)), _sizes(r),
                      f"{r.masks_checked}" + (f" ({r.rgb_masks} RGB)" if r.rgb_masks else ""))
    console.print(table)
    rows = _value_rows(report)
    if rows:
        values = Table(title=f"mask values ({len(report.classes)} classes, ignore {report.ignore_index})")
        for col in ("value", "id / class", "pixels", "share"):
            values.add_column(col, justify="left" if col == "id / class" else "right")
        for row in rows:
            values.add_row(*row)
        console.print(values)
    styles = {"error": "bold red", "fixed": "green", "warning": "yellow", "info": "dim"}
    for f in report.findings:
        text = escape(f"[{f.split}] {f.message}")
        console.print(f"[{styles[f.level]}]{f.level}[/] {text}", highlight=False)
    for key, value in report.suggestions.items():
        console.print(f"suggested option: {key} = {json.dumps(value)}", highlight=False)
    errors = sum(f.level == "error" for f in report.findings)
    if report.ok:
        with_ = f" with the suggested config ({report.applied})" if report.applied else ""
        console.print(f"[bold green]OK[/]{escape(with_)}", highlight=False)
    else:
        console.print(f"[bold red]NOT OK[/]: {errors} error(s)")
