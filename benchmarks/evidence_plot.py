"""Parameters vs val mIoU of every CamVid evidence arm in one picture (docs/results/size_vs_miou.png).

Reads the per-run summaries committed under docs/results/ (the studies of
configs/studies/camvid_*.yaml, full training data only), groups them as `segkd report` does (mean
± sample std over seeds) and draws one marker per arm, coloured by family, with the teacher
(UNet-R34, 24.4M parameters, val mIoU 0.543) and the cross-entropy baseline as reference lines.
Arms of one model share an x position; the right panel names every arm, sorted. Usage: python benchmarks/evidence_plot.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segkd.apps.report.tables import aggregate, load_runs  # noqa: E402

TEACHER = (24.4, 0.543)  # ../shared/teachers/camvid-unet-r34-128x96.pt: params (M), val mIoU
STUDIES = ("camvid_methods", "camvid_search", "camvid_kdsemseg", "camvid_kdsemseg_followup", "camvid_pnp",
           "camvid_pnp_front")
FAMILIES = [  # (name, colour, marker, test on the method name)
    ("CE baseline", "black", "s", lambda m: m in ("ce", "scratch")),
    ("teacher-initialised", "tab:green", "D", lambda m: m.startswith("tinit")),
    ("Plug and Play, images only", "tab:purple", "*", lambda m: m.startswith(("pnp", "front")) and "labels" not in m),
    ("same cheap model, labels", "tab:gray", "x", lambda m: m.startswith(("pnp", "front"))),
    ("kdsemseg plans", "tab:orange", "^", lambda m: m.split("_")[0] in ("stagewise", "traditional",
                                                                            "simultaneous")),
    ("loss-only distillation", "tab:blue", "o", lambda m: True),
]


def family(method: str) -> tuple[str, str, str]:
    """(family, colour, marker) of an arm."""
    for name, colour, marker, test in FAMILIES:
        if test(method):
            return name, colour, marker
    raise AssertionError(method)


def rows() -> list[dict]:
    """Full-data arms of every study with at least one finished run (the kdsemseg study's
    scratch arm is its CE baseline; the methods study's CE row is drawn once)."""
    out, seen = [], set()
    for study in STUDIES:
        folder = ROOT / "docs" / "results" / study
        if not list(folder.glob("*/*/*/*/summary.json")):
            continue
        for r in aggregate(load_runs([folder]), ddof=1):
            if r["fraction"] != 1.0 or r["val"] is None or (r["method"], r["params"]) in seen:
                continue
            seen.add((r["method"], r["params"]))
            out.append({**r, "study": study})
    return out


def plot(data: list[dict], path: Path) -> Path:
    """Left: parameters vs mIoU, one marker per arm (arms of one model fanned out by a few
    hundredths of a million), coloured by family. Right: every arm by name, sorted, mean ± std."""
    fig, (ax, dots) = plt.subplots(1, 2, figsize=(12, 6), dpi=120, gridspec_kw={"width_ratios": [1, 1.1]})
    base = [r["val"][0] for r in data if r["method"] == "ce"]
    for a in (ax, dots):
        a.grid(alpha=0.3)
        (a.axhline if a is ax else a.axvline)(TEACHER[1], color="tab:red", lw=0.8, ls="--")
        if base:
            (a.axhline if a is ax else a.axvline)(base[0], color="black", lw=0.8, ls=":")
    ax.plot(*TEACHER, marker="P", ms=11, color="tab:red", ls="none", label="teacher UNet-R34")
    by_x: dict[float, int] = {}
    shown = set()
    for r in sorted(data, key=lambda r: (r["params"], r["val"][0])):
        name, colour, marker = family(r["method"])
        x = r["params"] / 1e6
        k = by_x.get(round(x, 1), 0)
        by_x[round(x, 1)] = k + 1
        mean, std = r["val"]
        ax.errorbar(x + 0.04 * k, mean, yerr=0 if std != std else std, marker=marker, color=colour,
                    ms=9 if marker == "*" else 5, capsize=2, ls="none",
                    label=None if name in shown else name)
        shown.add(name)
    ax.set_xlabel("student parameters (M)")
    ax.set_ylabel("val mIoU (480x360 labels)")
    ax.set_title("parameters vs mIoU (red: teacher, dotted: CE baseline)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    order = sorted(data, key=lambda r: r["val"][0])
    for i, r in enumerate(order):
        _, colour, marker = family(r["method"])
        mean, std = r["val"]
        dots.errorbar(mean, i, xerr=0 if std != std else std, marker=marker, color=colour,
                      ms=9 if marker == "*" else 5, capsize=2, ls="none")
    dots.set_yticks(range(len(order)))
    dots.set_yticklabels([f"{r['method']}  {r['params'] / 1e6:.1f}M, {r['n']} seed{'s' if r['n'] > 1 else ''}"
                          for r in order], fontsize=7)
    dots.set_xlabel("val mIoU, mean ± sample std over seeds")
    dots.set_title("every arm (full training data)", fontsize=9)
    fig.suptitle("CamVid, camvid-small protocol: the evidence studies (configs/studies/camvid_*.yaml)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(plot(rows(), ROOT / "docs" / "results" / "size_vs_miou.png"))
