"""The report's figures (matplotlib, Agg): per-class IoU bars, accuracy scatter plots with every
point labelled and the teacher marked, training curves with the stages marked."""
from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Optional, Sequence

ROLE_STYLE = {"teacher": dict(marker="*", s=220, color="#d62728", zorder=4),
              "baseline": dict(marker="s", s=60, color="#7f7f7f", zorder=3),
              "student": dict(marker="o", s=60, color="#1f77b4", zorder=3)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an <img> that needs no file and no server."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ------------------------------------------------------------------------------ per-class IoU
def loss_order(teacher: Sequence[Optional[float]], student: Sequence[Optional[float]]) -> list[int]:
    """Class indices, the one the student lost most against the teacher (teacher - student
    IoU) first; a class either of them never saw (None) comes last, in class order."""
    n = max(len(teacher), len(student))
    known, unknown = [], []
    for c in range(n):
        t = teacher[c] if c < len(teacher) else None
        s = student[c] if c < len(student) else None
        (known if t is not None and s is not None else unknown).append((c, t, s))
    known.sort(key=lambda x: (-(x[1] - x[2]), x[0]))
    return [c for c, _, _ in known] + [c for c, _, _ in unknown]


def per_class_figure(classes: Sequence[str], bars: list[tuple[str, Sequence[Optional[float]], str]],
                     order: list[int], title: str):
    """Grouped horizontal bars, one group per class in ``order`` (top first); ``bars``: (label,
    per-class IoU, colour). A class a model never saw has no bar."""
    plt = _plt()
    height = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(5.6, 0.2 * len(order) * max(1, len(bars)) + 1.4))
    for b, (label, values, colour) in enumerate(bars):
        ys = [i + b * height for i in range(len(order))]
        xs = [values[c] if c < len(values) and values[c] is not None else 0.0 for c in order]
        ax.barh(ys, xs, height=height, label=label, color=colour)
    ax.set_yticks([i + height * (len(bars) - 1) / 2 for i in range(len(order))])
    ax.set_yticklabels([classes[c] if c < len(classes) else f"class {c}" for c in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.set_title(title, fontsize=9, pad=22)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(bars), frameon=False)
    return fig


# ------------------------------------------------------------------------------------ scatter
def scatter_figure(points: list[dict], xlabel: str, ylabel: str, title: str = "", logx: bool = False):
    """One marker per point ({label, x, y, yerr, role}), each labelled, no lines between them
    (different models and methods are not one curve); the teacher is a red star."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    seen: set[str] = set()
    for p in points:
        style = ROLE_STYLE.get(p.get("role", "student"), ROLE_STYLE["student"])
        yerr = p.get("yerr")
        if yerr is not None and not math.isnan(yerr) and yerr > 0:
            ax.errorbar(p["x"], p["y"], yerr=yerr, fmt="none", ecolor=style["color"], capsize=3,
                        alpha=0.7)
        role = p.get("role", "student")
        ax.scatter([p["x"]], [p["y"]], label=None if role in seen else role, **style)
        seen.add(role)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if points:
        ax.margins(x=0.25, y=0.12)
        ax.autoscale_view()
        _labels(ax, points)
        ax.legend(fontsize=8, loc="best")
    return fig


def _labels(ax, points: list[dict], gap: float = 11.0) -> None:
    """Label every point to its right; labels of points close together (models of the same
    size) are pushed apart vertically, each joined to its point by a thin line."""
    xy = ax.transData.transform([(p["x"], p["y"]) for p in points])
    placed: list[tuple[float, float]] = []  # (pixel x, label pixel y) of the labels so far
    for i in sorted(range(len(points)), key=lambda i: -xy[i][1]):
        px, py = xy[i]
        y = py
        for qx, qy in sorted(placed, key=lambda q: -q[1]):
            if abs(qx - px) < 80 and y > qy - gap:
                y = qy - gap
        placed.append((px, y))
        ax.annotate(points[i]["label"], (points[i]["x"], points[i]["y"]), textcoords="offset pixels",
                    xytext=(10, y - py), fontsize=7, va="center",
                    arrowprops=dict(arrowstyle="-", color="#999", lw=0.5) if py - y > 3 else None)


# ---------------------------------------------------------------------------- training curves
def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl ([] when absent; unreadable lines skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def stage_starts(rows: list[dict]) -> list[tuple[float, str]]:
    """(step, stage name) where each stage's logging starts (epoch rows carry the stage)."""
    out: list[tuple[float, str]] = []
    prev_step = 0.0
    for r in rows:
        if "stage" in r and (not out or out[-1][1] != r["stage"]):
            out.append((prev_step, str(r["stage"])))
        if "stage" in r:
            prev_step = float(r["step"])
    return out


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["step"]), float(r[key])) for r in rows
           if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def curves_figure(runs: list[tuple[str, list[dict]]], title: str):
    """Three panels over training steps: the epoch means of every loss term, the validation
    (and held-out selection) scores, the learning rate; one line style per seed, the stages
    marked by dashed lines."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    panels = [lambda k: k.startswith("train/loss"), lambda k: k.startswith(("val/", "select/"))
              and not k.startswith(("val/loss", "select/loss")), lambda k: k == "lr"]
    colours: dict[str, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (seed, rows) in enumerate(runs):
        epoch_rows = [r for r in rows if "epoch" in r]
        keys = sorted({k for r in rows for k in r})
        for ax, wanted in zip(axes, panels):
            for key in (k for k in keys if wanted(k) and k != "train/loss_step"):
                src = rows if key == "lr" else epoch_rows
                xs, ys = _series(src, key)
                if not xs:
                    continue
                colour = colours.setdefault(key, palette[len(colours) % len(palette)])
                ax.plot(xs, ys, color=colour, alpha=1.0 if i == 0 else 0.45, lw=1.2,
                        ls="-" if i == 0 else "--", label=key if i == 0 else None,
                        marker="." if len(xs) < 30 and key != "lr" else None)
    first = runs[0][1] if runs else []
    for ax, name in zip(axes, ("loss (epoch mean)", "validation", "learning rate")):
        for step, stage in stage_starts(first):
            ax.axvline(step, color="#999", ls=":", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2 if len(ax.get_lines()) > 6 else 1)
    starts = stage_starts(first)
    if len(starts) > 1:
        for step, stage in starts:
            axes[0].annotate(stage, (step, 1.0), xycoords=("data", "axes fraction"),
                             fontsize=6, rotation=90, va="top", ha="right", color="#555")
    if all(y > 0 for line in axes[0].get_lines() for y in line.get_ydata()) and axes[0].get_lines():
        axes[0].set_yscale("log")
    seeds = ", ".join(s for s, _ in runs)
    fig.suptitle(f"{title} (seeds {seeds}; first seed solid)" if len(runs) > 1 else title, fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ legend
def legend_figure(classes: list[str], palette) -> object:
    """The class colours of segkd's masks (``class_palette``) as swatches with their names."""
    from matplotlib.patches import Patch

    plt = _plt()
    cols = min(4, max(1, len(classes)))
    rows = math.ceil(len(classes) / cols)
    fig = plt.figure(figsize=(2.3 * cols, 0.32 * rows + 0.3))
    handles = [Patch(facecolor=[v / 255 for v in palette[i]], edgecolor="#444", label=name)
               for i, name in enumerate(classes)]
    fig.legend(handles=handles, loc="center", ncol=cols, frameon=False, fontsize=9,
               handlelength=1.4, columnspacing=1.2)
    return fig
