"""The report's table for a terminal: fits 80 columns (short headers, cells that wrap at their
spaces, the model and method names in a legend under the table keyed by a short id: T teacher,
B baseline, S1.. students), latency included when it was measured."""
from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from segkd.apps.report.analysis import Analysis
from segkd.apps.report.stats import cell

SPLITS = ("train", "val", "test")
VERDICT = {"better": "▲", "worse": "▼", "no difference": "≈", "no interval (n=1)": "?"}
METRIC = {"mIoU": "mIoU", "per_image_iou": "per-image IoU (kdsemseg)", "pixel_acc": "pixel acc",
          "mean_acc": "mean acc"}


def _delta(row: dict) -> str:
    c = row.get("cmp")
    if not c:
        return "—"
    if c["delta"] is None:
        return "base"
    return f"{c['delta']:+.3f}{VERDICT.get(c['verdict'], '')}"


def _share(row: dict) -> str:
    c = row.get("cmp")
    return "—" if not c or c.get("share") is None else f"{100 * c['share']:+.0f}%"


def _columns(analysis: Analysis) -> tuple[list[str], bool, bool]:
    splits = [s for s in SPLITS if any(r.get(s) for r in analysis.rows)]
    with_cmp = any(r.get("cmp") for r in analysis.rows)
    with_latency = any(r.get("latency_ms") is not None for r in analysis.rows)
    return splits, with_cmp, with_latency


def terminal_table(analysis: Analysis) -> Table:
    """The rows of ``analysis`` as a rich Table that renders within 80 columns."""
    splits, with_cmp, with_latency = _columns(analysis)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), title="results",
                  title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("method", overflow="fold", min_width=6, ratio=1)
    table.add_column("n", justify="right", no_wrap=True)
    for s in splits:
        table.add_column(s, justify="right", min_width=6)
    if with_cmp:
        table.add_column(f"Δ {analysis.split}", justify="right", no_wrap=True)
        table.add_column("gap", justify="right", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    if with_latency:
        table.add_column("ms", justify="right", no_wrap=True)
    for r in analysis.rows:
        cells: list[Any] = [r["id"], r["method"], str(r["n"])]
        cells += [cell(r.get(s), r.get(f"{s}_n", r["n"]), 3) for s in splits]
        if with_cmp:
            cells += [_delta(r), _share(r)]
        cells.append(f"{r['params'] / 1e6:.2f}" if r.get("params") else "—")
        if with_latency:
            lat = r.get("latency_ms")
            cells.append("—" if lat is None else f"{lat:.1f}")
        table.add_row(*cells)
    return table


def legend(analysis: Analysis, ddof: int = 0) -> list[Text]:
    """The lines under the table: what each id is and what each column means."""
    lines = [Text(f"{r['id']:<3} {r['role']}: {r['model']}, {r['method']}"
                  + (f", fraction {r['fraction']:g}" if r["fraction"] != 1.0 else "")
                  + (f", seeds {', '.join(map(str, r['seeds']))}" if r.get("seeds") else ""))
              for r in analysis.rows]
    splits, with_cmp, with_latency = _columns(analysis)
    std = "population std" if ddof == 0 else "sample std"
    text = (f"Cells: {METRIC.get(analysis.metric, analysis.metric)} per split, mean ±{std} over "
            "n seeds (one seed: the value alone). params: millions.")
    if with_cmp:
        text += (f" Δ {analysis.split}: vs the baseline of the same model and fraction; ▲ better, "
                 "▼ worse (the Welch 95% interval excludes 0), ≈ no difference, ? one seed. gap: "
                 "Δ / (teacher − baseline).")
    if with_latency:
        text += f" ms: latency, {analysis.latency}."
    lines.append(Text(text, style="dim"))
    return lines
