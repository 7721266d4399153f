"""Runs -> tables (mean ± std over seeds), per-class IoU and a size-vs-mIoU plot.

A run is a directory holding ``summary.json`` (written by the engine at the end of a run), with
``config.yaml`` and, for runs made by ``segkd study``, ``study.json`` ({method, encoder, fraction,
seed}) beside it. Runs are grouped by (model, method, fraction); each group becomes one row with
Train / Val / Test mean ± std over its seeds, as in kdsemseg's tables. The method is the study's
label, else what the resolved config trains (its stages' losses, e.g. ``ce+kd``), never the run's
name alone (a name such as ``camvid-r18-kd`` stays after ``--set model.encoder=...``). Runs of one
method whose configs differ in anything but the seed and the keys a resume may change are shown
as separate rows labelled with the differing keys; the same seed run twice with the same config
counts once (the newest), and the report names the ignored run.

Two IoUs exist: the standard dataset-level mIoU (one confusion matrix per split, the default) and
kdsemseg's per-image IoU (``per_image=True``), which is only comparable to that seed's numbers.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
from rich.console import Console
from rich.table import Table

from segkd.apps.report.analysis import class_means as _class_means
from segkd.apps.report.runs import group_runs, load_runs, selection_label
from segkd.apps.report.stats import DASH, cell

SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------- single-run tables
def _fmt(value: Any, digits: int = 4) -> str:
    """A number as text; None / NaN / missing -> an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:.{digits}f}"


def summary_table(summary: dict) -> Table:
    """One row per evaluated split: mIoU, pixel acc, mean acc, per-image IoU (for ``segkd train``)."""
    params = summary.get("params")
    title = f"{summary.get('name', 'run')} (seed {summary.get('seed', '?')})"
    if params:
        title += f" | {params / 1e6:.2f}M params"
    if summary.get("wall_time_s") is not None:
        title += f" | {summary['wall_time_s']:.1f} s"
    table = Table(title=title)
    for col in ("split", "mIoU", "pixel acc", "mean acc", "per-image IoU (kdsemseg)"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for split, m in summary.get("splits", {}).items():
        table.add_row(split, _fmt(m.get("mIoU")), _fmt(m.get("pixel_acc")), _fmt(m.get("mean_acc")),
                      _fmt(m.get("per_image_iou")))
    return table


def metrics_table(metrics: dict, classes: list[str]) -> Table:
    """Per-class IoU then the summary metrics (for ``segkd eval``); absent classes show a dash."""
    table = Table(title="evaluation")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    for i, iou in enumerate(metrics.get("per_class_iou", [])):
        table.add_row(classes[i] if i < len(classes) else f"class {i}", _fmt(iou))
    table.add_section()
    for key, label in (("mIoU", "mIoU"), ("pixel_acc", "pixel acc"), ("mean_acc", "mean acc"),
                       ("per_image_iou", "per-image IoU (kdsemseg)")):
        if key in metrics:
            table.add_row(f"[bold]{label}[/bold]", _fmt(metrics[key]))
    return table


# ------------------------------------------------------------------------------- aggregation
def _split_value(summary: dict, split: str, metric: str) -> Optional[float]:
    value = (summary.get("splits") or {}).get(split, {}).get(metric)
    return None if value is None else float(value)


def _mean_std(values: list[float], ddof: int) -> Optional[tuple[float, float]]:
    """(mean, std) with ``ddof`` (0 = population, as kdsemseg's np.std); None when empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=ddof)) if arr.size > ddof else float("nan")
    return float(arr.mean()), std


def aggregate(runs: list[dict], metric: str = "mIoU", per_image: bool = False,
              ddof: int = 0, notes: Optional[list[str]] = None) -> list[dict]:
    """One row per (model, method, fraction) with each split's mean ± std over seeds.

    ``per_image=True`` reads ``per_image_iou`` (kdsemseg's IoU) instead of ``metric``. A split is
    None when no seed of the group evaluated it. ``ddof=1`` gives the sample std.
    """
    metric = "per_image_iou" if per_image else metric
    rows = []
    for (model, method, frac), group in group_runs(runs, notes).items():
        row: dict[str, Any] = {
            "model": model, "method": method, "fraction": frac, "n": len(group),
            "seeds": sorted(r["summary"].get("seed") for r in group),
            "params": group[0]["summary"].get("params"),
            "wall_time_s": float(np.mean([r["summary"].get("wall_time_s") or 0.0 for r in group])),
            "metric": metric, "ddof": ddof, "classes": group[0]["summary"].get("classes") or [],
            "selection": sorted({selection_label(r["summary"]) for r in group})}
        for split in SPLITS:
            vals = [v for r in group if (v := _split_value(r["summary"], split, metric)) is not None]
            row[split] = _mean_std(vals, ddof)
            row[f"{split}_n"] = len(vals)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["method"], -r["fraction"], r["params"] or 0, r["model"]))





def describe(rows: list[dict]) -> str:
    """One sentence saying which IoU and which std the table shows."""
    metric = rows[0]["metric"] if rows else "mIoU"
    ddof = rows[0]["ddof"] if rows else 0
    what = {"per_image_iou": "kdsemseg per-image IoU (class-mean IoU per image, averaged over "
                             "images; not comparable to the standard mIoU)",
            "mIoU": "dataset-level mIoU (one confusion matrix per split)"}.get(metric, metric)
    std = "population std (ddof=0, as kdsemseg)" if ddof == 0 else "sample std (ddof=1)"
    chosen = sorted({s for r in rows for s in r.get("selection", [])})
    how = f" Epoch reported: {'; '.join(chosen)}." if chosen else ""
    return f"Metric: {what}. Cells: mean ± {std} over seeds (one seed: its value).{how}"



# ------------------------------------------------------------------------------ table output
_SHORT = {"mIoU": "mIoU", "per_image_iou": "IoU (per-image)", "pixel_acc": "pixel acc",
          "mean_acc": "mean acc"}


def _head(rows: list[dict]) -> list[str]:
    """Column titles, e.g. 'Val mIoU' or 'Val IoU (per-image)'."""
    metric = rows[0]["metric"] if rows else "mIoU"
    label = _SHORT.get(metric, metric)
    return ["Model", "Params (M)", "Seeds"] + [f"{s.capitalize()} {label}" for s in SPLITS]


def _cells(row: dict) -> list[str]:
    params = f"{row['params'] / 1e6:.2f}" if row["params"] else DASH
    return [row["model"], params, str(row["n"])] + [cell(row[s], row.get(f"{s}_n", row["n"]))
                                                   for s in SPLITS]


def markdown_table(rows: list[dict]) -> str:
    """kdsemseg-shaped Markdown: one section per (method, fraction), one line per model."""
    lines = ["# Results", "", describe(rows), ""]
    sections: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        sections.setdefault((r["method"], r["fraction"]), []).append(r)
    for (method, frac), items in sections.items():
        head = _head(items)
        lines += [f"### {method}, fraction {frac:g}", "", "| " + " | ".join(head) + " |",
                  "| " + " | ".join("---" for _ in head) + " |"]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in items]
        lines.append("")
    return "\n".join(lines)


def _csv_rows(rows: list[dict]) -> list[list[Any]]:
    header = ["model", "method", "fraction", "params", "n_seeds", "seeds", "metric", "ddof"]
    header += [f"{s}_{k}" for s in SPLITS for k in ("mean", "std")] + ["wall_time_s"]
    out: list[list[Any]] = [header]
    for r in rows:
        line = [r["model"], r["method"], r["fraction"], r["params"], r["n"],
                " ".join(map(str, r["seeds"])), r["metric"], r["ddof"]]
        for s in SPLITS:
            line += list(r[s]) if r[s] is not None else ["", ""]
        out.append(line + [round(r["wall_time_s"], 2)])
    return out


def rich_table(rows: list[dict]) -> Table:
    table = Table(title="results", caption=describe(rows))
    for col in ["Method", "Fraction"] + _head(rows):
        table.add_column(col, justify="left" if col in ("Method", "Model") else "right")
    for r in rows:
        table.add_row(r["method"], f"{r['fraction']:g}", *_cells(r))
    return table


def write_tables(rows: list[dict], out_dir: str | Path, console: Optional[Console] = None,
                 show: Optional[list] = None) -> dict:
    """Write results.md and results.csv into ``out_dir`` and print the table (or what ``show``
    holds: the report's 80-column table and its legend); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, cs = out / "results.md", out / "results.csv"
    md.write_text(markdown_table(rows))
    with cs.open("w", newline="") as fh:
        csv.writer(fh).writerows(_csv_rows(rows))
    console = console or Console()
    for item in show or [rich_table(rows)]:
        console.print(item)
    return {"markdown": md, "csv": cs}


# ---------------------------------------------------------------------------- per-class IoU
def per_class_table(runs: list[dict], split: str = "val") -> str:
    """Markdown: per-class IoU (mean over seeds) of each group; one table per class list."""
    tables: dict[tuple[str, ...], list[str]] = {}
    groups = sorted(group_runs(runs).items(), key=lambda kv: (kv[0][1], -kv[0][2], kv[0][0]))
    for (model, method, frac), group in groups:
        means = _class_means(group, split)
        classes = tuple(group[0]["summary"].get("classes") or [f"class {i}" for i in range(len(means))])
        cells = [_fmt(means[i]) if i < len(means) else DASH for i in range(len(classes))]
        tables.setdefault(classes, []).append(
            f"| {model} | {method} | {frac:g} | {len(group)} | " + " | ".join(cells) + " |")
    lines = [f"# Per-class {split} IoU (dataset-level, mean over seeds)", ""]
    for classes, body in tables.items():
        head = ["Model", "Method", "Fraction", "Seeds", *classes]
        lines += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |",
                  *body, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- plot
def _points(rows: list[dict], key: str, scale: float) -> list[dict]:
    out = []
    for r in rows:
        if r.get("val") is None or not r.get(key):
            continue
        label = r["method"] if r["fraction"] == 1.0 else f"{r['method']} (f={r['fraction']:g})"
        out.append({"label": f"{r['id']} {label}" if r.get("id") else label,
                    "x": r[key] * scale, "y": r["val"][0], "yerr": r["val"][1],
                    "role": r.get("role", "student")})
    return out


def plot_size_vs_miou(rows: list[dict], path: str | Path, key: str = "params",
                      xlabel: str = "parameters (M)") -> Path:
    """PNG: validation mean (y, error bar = std over seeds) against model parameters in millions
    (or ``key``, e.g. ``latency_ms``): one labelled point per row, no lines between them, the
    teacher (rows with roles, see segkd.apps.report.analysis) a red star."""
    from segkd.apps.report.figures import scatter_figure, to_png

    metric = rows[0]["metric"] if rows and "metric" in rows[0] else "mIoU"
    fig = scatter_figure(_points(rows, key, 1e-6 if key == "params" else 1.0), xlabel,
                         f"val {_SHORT.get(metric, metric)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png(fig, dpi=120))
    return path


# --------------------------------------------------------------------------- full report
def report(paths: Iterable[str | Path], out_dir: str | Path, per_image: bool = False,
           sample_std: bool = False, plot: bool = False, metric: str = "mIoU",
           console: Optional[Console] = None, baseline: Optional[str] = None,
           teacher_score: Optional[float] = None, teacher_eval: Optional[str | Path] = None,
           html: Optional[str | Path] = None, screenshot: bool = False,
           latency: Optional[bool] = None, setup=None, size: Optional[tuple[int, int]] = None,
           gallery: int = 6, device: str = "cpu") -> dict:
    """Load runs, find their roles (teacher, baselines, students: segkd.apps.report.roles), write
    results.md / results.csv / per_class.md, comparison.md (each run against the baseline of its
    model, the share of the teacher-baseline gap), with ``plot`` size_vs_miou.png (and
    latency_vs_miou.png), with ``html`` the one-file page (segkd.apps.report.page; ``screenshot``:
    a PNG of it beside it). ``latency`` (default: with ``html``) measures each model with
    ``setup`` (a segkd.apps.deploy_compare.LatencySetup; default CPU, fp32, batch 1, 1 thread) at ``size``
    (default: the runs' input size)."""
    from segkd.apps.report.analysis import analyse, read_teacher_eval
    from segkd.apps.report.terminal import legend, terminal_table

    runs = load_runs(paths)
    notes: list[str] = []
    ddof = 1 if sample_std else 0
    rows = aggregate(runs, metric=metric, per_image=per_image, ddof=ddof, notes=notes)
    metric_key = "per_image_iou" if per_image else metric
    analysis = analyse(rows, group_runs(runs), metric_key, baseline=baseline,
                       teacher_score=teacher_score,
                       teacher_eval=read_teacher_eval(teacher_eval) if teacher_eval else None,
                       notes=notes)
    if latency if latency is not None else html is not None:
        from segkd.apps.deploy_compare import LatencySetup
        from segkd.apps.report.measure import measure

        measure(analysis, setup or LatencySetup(threads=1), size)
    console = console or Console()
    for note in analysis.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    written = write_tables(rows, out_dir, console, show=[terminal_table(analysis), *legend(analysis, ddof)])
    pc = Path(out_dir) / "per_class.md"
    pc.write_text(per_class_table(runs))
    written["per_class"] = pc
    if plot:
        written["plot"] = plot_size_vs_miou(analysis.rows, Path(out_dir) / "size_vs_miou.png")
        if analysis.latency:
            written["latency_plot"] = plot_size_vs_miou(
                analysis.rows, Path(out_dir) / "latency_vs_miou.png", "latency_ms", "latency (ms)")
    written.update(_comparison_md(analysis, out_dir, baseline))
    if html:
        written.update(_html(analysis, runs, html, screenshot, gallery, device, ddof, console))
    return written


def _comparison_md(analysis, out_dir: str | Path, baseline: Optional[str]) -> dict:
    from segkd.apps.report.stats import comparison_markdown

    cmp_rows = [r["cmp"] for r in analysis.rows if r.get("cmp")]
    if not cmp_rows:
        return {}
    names = baseline or ", ".join(sorted({k[1] for k in analysis.roles.baseline_of.values()}))
    shared = {k: v for k, v in analysis.teacher_scores.items()
              if any(r["key"] == k and r.get("cmp") for r in analysis.rows)}
    path = Path(out_dir) / "comparison.md"
    path.write_text(comparison_markdown(cmp_rows, names, shared or None, split=analysis.split,
                                        metric=analysis.metric))
    return {"comparison": path}


def _html(analysis, runs: list[dict], html: str | Path, screenshot: bool, gallery: int,
          device: str, ddof: int, console: Console) -> dict:
    from segkd.apps.report.gallery import build_gallery
    from segkd.apps.report.page import rel, write_html

    shown, gallery_notes = (build_gallery(analysis, n=gallery, device=device) if gallery > 0
                            else (None, ["prediction gallery not asked for (--gallery 0)"]))
    studies = sorted({str((r.get("study") or {}).get("study")) for r in runs if r.get("study")})
    title = f"segkd report: {', '.join(studies) if studies else rel(Path(runs[0]['dir']).parent)}"
    page = write_html(analysis, html, title, shown, gallery_notes, ddof)
    out = {"html": page}
    if screenshot:
        from segkd.apps.report.browser import render

        png = page.with_suffix(".png")
        render(page, screenshot=png)
        out["screenshot"] = png
    for note in gallery_notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    return out
