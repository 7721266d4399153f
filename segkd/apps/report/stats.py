"""Method vs baseline: the difference, its 95% interval and the share of the teacher-baseline gap.

A distillation result only means something next to the baseline trained the same way and the
teacher it learned from. For each method (same model and data fraction as the baseline) this
gives, from the per-seed values of one split:

- delta = mean(method) - mean(baseline), with a Welch 95% interval (sample std of each arm,
  Welch-Satterthwaite degrees of freedom, Student-t quantile rounded down to a whole degree of
  freedom, i.e. slightly wider than exact);
- the share of the gap closed = delta / (teacher - baseline), when the teacher's score is given;
- a verdict: "better" / "worse" when the interval excludes 0, else "no difference".
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from segkd.apps.report.runs import selection_label
from segkd.core.errors import SegkdError

# Student-t 0.975 quantiles for 1..30 degrees of freedom (beyond 30: the normal 1.96 is within 3%)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

DASH = "—"


def cell(value: Optional[tuple[float, float]], n: int, digits: int = 4, one_seed: str = "") -> str:
    """'mean ± std' over seeds; from one seed the value alone followed by ``one_seed`` (e.g.
    " (n=1)" where no Seeds column says so), never '± 0'; no value: an em dash."""
    if not value:
        return DASH
    mean, std = value
    if n < 2 or std is None or math.isnan(std):
        return f"{mean:.{digits}f}{one_seed}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def t975(df: float) -> float:
    """Student-t 0.975 quantile at ``floor(df)`` degrees of freedom (conservative)."""
    k = max(1, int(math.floor(df)))
    return _T975[k - 1] if k <= len(_T975) else 1.96


def welch_interval(a: list[float], b: list[float]) -> Optional[tuple[float, float, float]]:
    """(mean(a) - mean(b), low, high) of the 95% Welch interval; None with < 2 values in an arm."""
    if len(a) < 2 or len(b) < 2:
        return None
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    delta = float(xa.mean() - xb.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return delta, delta, delta
    df = (va + vb) ** 2 / ((va ** 2) / (len(xa) - 1) + (vb ** 2) / (len(xb) - 1))
    half = t975(df) * se
    return delta, delta - half, delta + half


def _values(group: list[dict], split: str, metric: str) -> list[float]:
    out = []
    for run in group:
        v = (run["summary"].get("splits") or {}).get(split, {}).get(metric)
        if v is not None:
            out.append(float(v))
    return out


GroupKey = tuple[str, str, float]


def _bases_by_name(groups: dict[GroupKey, list[dict]], baseline: str
                   ) -> dict[tuple[str, float], tuple[str, list[dict]]]:
    """(model, fraction) -> (method, runs) of the baseline method(s) named in ``baseline``."""
    names = [b.strip() for b in baseline.split(",") if b.strip()]
    bases: dict[tuple[str, float], tuple[str, list[dict]]] = {}
    for (m, meth, f), g in groups.items():
        if meth in names:
            if (m, f) in bases:
                raise SegkdError(f"baselines '{bases[(m, f)][0]}' and '{meth}' both have runs of "
                                 f"{m} at fraction {f:g}: give one baseline per model")
            bases[(m, f)] = (meth, g)
    if not bases:
        known = sorted({meth for _, meth, _ in groups})
        raise SegkdError(f"baseline method '{baseline}' not found among the runs; methods: "
                         f"{', '.join(known)}")
    return bases


def compare(groups: dict[GroupKey, list[dict]], baseline: str | dict[tuple[str, float], str],
            teacher_score: Optional[float] | dict[GroupKey, float] = None, split: str = "val",
            metric: str = "mIoU") -> list[dict[str, Any]]:
    """One row per (model, method, fraction) group that has a baseline group of the same model
    and fraction: mean, std, delta with its interval, share of the gap, verdict.

    ``baseline`` may list several methods, comma-separated ("a_labels,b_labels"): each (model,
    fraction) is then compared with the one of them it has, e.g. each Plug-and-Play size with
    the same architecture trained with labels; two of them for one model is an error. It may
    also map each (model, fraction) to its baseline method (the roles `segkd report` found).
    ``teacher_score`` is one score for all, or one per group (each student's own teacher)."""
    if isinstance(baseline, dict):
        bases = {mf: (meth, groups[(mf[0], meth, mf[1])]) for mf, meth in baseline.items()}
        names = list(baseline.values())
    else:
        bases = _bases_by_name(groups, baseline)
        names = [b.strip() for b in baseline.split(",") if b.strip()]
    rows = []
    for (model, method, frac), group in groups.items():
        base_method, base = bases.get((model, frac), (None, None))
        vals = _values(group, split, metric)
        if base is None or not vals:
            continue
        bvals = _values(base, split, metric)
        row: dict[str, Any] = {"model": model, "method": method, "fraction": frac,
                               "n": len(vals), "mean": float(np.mean(vals)),
                               "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"),
                               "delta": None, "low": None, "high": None, "share": None,
                               "verdict": "baseline" if method == base_method else "—",
                               "selection": sorted({selection_label(r["summary"]) for r in group})}
        if method != base_method:
            ci = welch_interval(vals, bvals)
            row["delta"] = float(np.mean(vals) - np.mean(bvals))
            if ci is not None:
                _, row["low"], row["high"] = ci
                row["verdict"] = ("better" if row["low"] > 0 else "worse" if row["high"] < 0
                                  else "no difference")
            else:
                row["verdict"] = "no interval (n=1)"
            score = (teacher_score.get((model, method, frac)) if isinstance(teacher_score, dict)
                     else teacher_score)
            gap = None if score is None else score - float(np.mean(bvals))
            if gap is not None and gap > 0:
                row["share"] = row["delta"] / gap
        rows.append(row)
    return sorted(rows, key=lambda r: (r["model"], -r["fraction"], r["method"] not in names,
                                       -(r["mean"])))


def _selection_sentence(rows: list[dict]) -> str:
    chosen = sorted({s for r in rows for s in r.get("selection", [])})
    return f" Epoch reported: {'; '.join(chosen)}." if chosen else ""


def comparison_markdown(rows: list[dict], baseline: str,
                        teacher_score: Optional[float] | dict[GroupKey, float],
                        split: str = "val", metric: str = "mIoU") -> str:
    """The comparison as Markdown, with a sentence saying how each column is computed."""
    lines = [f"# Methods vs the '{baseline}' baseline ({split} {metric})", ""]
    scores = sorted(set(teacher_score.values())) if isinstance(teacher_score, dict) else (
        [] if teacher_score is None else [teacher_score])
    if scores:
        lines.append(f"Teacher {split} {metric}: {' / '.join(f'{v:.4f}' for v in scores)}.")
    lines += ["Cells: mean ± sample std over seeds; Δ = method mean − baseline mean with a Welch 95% "
              "interval; gap share = Δ / (teacher − baseline); 'no difference' when the interval "
              "contains 0." + _selection_sentence(rows), "",
              "| Model | Fraction | Method | Seeds | " + f"{split.capitalize()} {metric} | Δ vs baseline "
              "| 95% interval | Gap share | Verdict |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        std = "" if math.isnan(r["std"]) else f" ± {r['std']:.4f}"
        delta = "—" if r["delta"] is None else f"{r['delta']:+.4f}"
        ci = "—" if r["low"] is None else f"[{r['low']:+.4f}, {r['high']:+.4f}]"
        share = "—" if r["share"] is None else f"{100 * r['share']:+.0f}%"
        lines.append(f"| {r['model']} | {r['fraction']:g} | {r['method']} | {r['n']} | "
                     f"{r['mean']:.4f}{std} | {delta} | {ci} | {share} | {r['verdict']} |")
    return "\n".join(lines) + "\n"
