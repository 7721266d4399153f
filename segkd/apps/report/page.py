"""``segkd report RUNS --html OUT.html``: one self-contained page (every image embedded as a
base64 PNG, no script, no server, nothing fetched) with the summary table, per-class IoU of the
teacher against each student, a prediction gallery, training curves, accuracy against parameters
and latency, and each run's config with the command that reproduces it.

The page is a Jinja2 template (segkd/apps/report/templates/report.html.j2) filled from an
:class:`~segkd.apps.report.analysis.Analysis`; the figures are matplotlib's (segkd.apps.report.figures).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from segkd.apps.report.analysis import Analysis
from segkd.apps.report.figures import (
    curves_figure,
    data_uri,
    loss_order,
    per_class_figure,
    read_metrics,
    scatter_figure,
    to_png,
)
from segkd.apps.report.roles import BASELINE, STUDENT, TEACHER
from segkd.apps.report.runs import selection_label
from segkd.apps.report.stats import cell

SPLITS = ("train", "val", "test")
METRIC_NAMES = {"mIoU": "mIoU", "per_image_iou": "per-image IoU (kdsemseg)", "pixel_acc": "pixel acc",
                "mean_acc": "mean acc"}
COLOURS = {TEACHER: "#d62728", STUDENT: "#1f77b4", BASELINE: "#9e9e9e"}


def rel(path: str | Path) -> str:
    """A path as the reader typed it: relative to the current directory when below it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _seeds(value: Optional[tuple[float, float]], n: int) -> str:
    return cell(value, n, one_seed=f" (n={n})")


def _cmp_cells(row: dict) -> dict[str, str]:
    c = row.get("cmp")
    if not c or c["delta"] is None:
        return {"delta": "—", "interval": "—", "verdict": "baseline" if c else "—", "share": "—"}
    return {"delta": f"{c['delta']:+.4f}",
            "interval": "—" if c["low"] is None else f"[{c['low']:+.4f}, {c['high']:+.4f}]",
            "verdict": c["verdict"], "share": "—" if c["share"] is None else f"{100 * c['share']:+.0f}%"}


def summary_rows(analysis: Analysis) -> tuple[list[str], list[dict]]:
    """(splits shown, one dict of display strings per row)."""
    splits = [s for s in SPLITS if any(r.get(s) for r in analysis.rows)]
    out = []
    for r in analysis.rows:
        lat = r.get("latency_ms")
        out.append({
            "id": r["id"], "role": r["role"], "model": r["model"], "method": r["method"],
            "fraction": f"{r['fraction']:g}", "n": r["n"],
            "seeds": ", ".join(map(str, r.get("seeds") or [])) or "—",
            "splits": [_seeds(r.get(s), r.get(f"{s}_n", r["n"])) for s in splits],
            **_cmp_cells(r),
            "params": f"{r['params'] / 1e6:.2f}" if r.get("params") else "—",
            "gflops": f"{r['gflops']:.2f}" if r.get("gflops") is not None else "—",
            "latency": "—" if lat is None else f"{lat:.1f} ± {r['latency_std_ms']:.1f}",
            "selection": "; ".join(r.get("selection") or []) or "—"})
    return splits, out


def per_class_figures(analysis: Analysis) -> list[dict]:
    """One figure per student: teacher, student (and its baseline) per class, sorted by what the
    student lost against the teacher."""
    teacher = analysis.teacher
    if not teacher or not teacher.get("per_class"):
        return []
    out = []
    for row in analysis.by_role(STUDENT):
        classes = row["classes"] or teacher["classes"]
        order = loss_order(teacher["per_class"], row["per_class"])
        bars = [("teacher", teacher["per_class"], COLOURS[TEACHER]),
                (f"{row['id']} {row['method']}", row["per_class"], COLOURS[STUDENT])]
        base_key = analysis.roles.baseline_of.get(row["key"])
        base = analysis.row(base_key) if base_key else None
        if base is not None:
            bars.append((f"{base['id']} {base['method']} (baseline)", base["per_class"], COLOURS[BASELINE]))
        title = (f"{row['id']} {row['method']} ({row['model']}): {analysis.split} IoU per class, "
                 "the class the student lost most first")
        out.append({"title": title, "uri": data_uri(to_png(per_class_figure(classes, bars, order, title)))})
    return out


def curve_figures(analysis: Analysis) -> list[dict]:
    """Training curves of each group (its seeds overlaid), from metrics.jsonl."""
    out = []
    for row in analysis.rows:
        if row.get("external"):
            continue
        runs = [(str(r["summary"].get("seed", "?")), read_metrics(r["dir"]))
                for r in analysis.groups[row["key"]]]
        runs = [(s, m) for s, m in runs if m]
        if not runs:
            continue
        title = f"{row['id']} {row['method']} ({row['model']})"
        out.append({"title": title, "uri": data_uri(to_png(curves_figure(runs, title)))})
    return out


def scatter_figures(analysis: Analysis) -> list[dict]:
    """Accuracy against parameters, and against latency when it was measured."""
    name = METRIC_NAMES.get(analysis.metric, analysis.metric)
    ylabel = f"{analysis.split} {name}"
    out = []
    for key, xlabel, scale, how in (
            ("params", "parameters (M)", 1e-6, "error bars: std over seeds"),
            ("latency_ms", "latency (ms)", 1.0, f"latency: {analysis.latency}")):
        pts = [{"label": f"{r['id']} {r['method']}", "x": r[key] * scale, "y": r[analysis.split][0],
                "yerr": r[analysis.split][1], "role": r["role"]}
               for r in analysis.rows if r.get(key) and r.get(analysis.split)]
        if pts:
            title = f"{ylabel} against {xlabel.split(' (')[0]}"
            out.append({"title": f"{title}; {how}",
                        "uri": data_uri(to_png(scatter_figure(pts, xlabel, ylabel, title)))})
    return out


def _command(run: dict) -> str:
    verb = "distill" if (run.get("config") or {}).get("teacher") else "train"
    return f"segkd {verb} {rel(Path(run['dir']) / 'config.yaml')}"


def config_blocks(analysis: Analysis) -> list[dict]:
    """Per group: the first run's config.yaml and the command that reproduces each seed."""
    out = []
    for row in analysis.rows:
        if row.get("external"):
            continue
        group = analysis.groups[row["key"]]
        text = next(((Path(r["dir"]) / "config.yaml").read_text() for r in group
                     if (Path(r["dir"]) / "config.yaml").is_file()), None)
        out.append({"id": row["id"], "title": f"{row['id']} {row['role']}: {row['method']} ({row['model']})",
                    "config": text, "dirs": [rel(r["dir"]) for r in group],
                    "commands": [_command(r) for r in group if (Path(r["dir"]) / "config.yaml").is_file()],
                    "selection": sorted({selection_label(r["summary"]) for r in group})})
    return out


def render(analysis: Analysis, title: str, gallery: Optional[dict] = None,
           gallery_notes: Optional[list[str]] = None, ddof: int = 0) -> str:
    """The page as a string."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("segkd.apps.report", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    splits, rows = summary_rows(analysis)
    teacher = analysis.teacher or {}
    context: dict[str, Any] = {
        "title": title, "generated": time.strftime("%Y-%m-%d %H:%M"), "analysis": analysis,
        "splits": splits, "rows": rows, "metric": METRIC_NAMES.get(analysis.metric, analysis.metric),
        "std": "population std (ddof=0)" if ddof == 0 else "sample std (ddof=1)",
        "teacher": teacher, "per_class": per_class_figures(analysis), "gallery": gallery,
        "gallery_notes": gallery_notes or [], "curves": curve_figures(analysis),
        "scatter": scatter_figures(analysis), "configs": config_blocks(analysis),
        "selection": sorted({s for r in analysis.rows for s in r.get("selection") or []}),
        "varied_selection": len({r["selection"] for r in rows if r["selection"] != "—"}) > 1}
    return env.get_template("report.html.j2").render(**context)


def write_html(analysis: Analysis, path: str | Path, title: str, gallery: Optional[dict] = None,
               gallery_notes: Optional[list[str]] = None, ddof: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(analysis, title, gallery, gallery_notes, ddof), encoding="utf-8")
    return path
