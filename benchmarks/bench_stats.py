"""Statistics of the step benchmark: paired per-round ratios with a bootstrap 95% interval.

Every round of ``bench_step.py`` times each variant once, back to back (the order rotated from
round to round), so the ratio of two variants within one round has the same background load on
both sides. A comparison is the median of those per-round ratios; its 95% interval comes from a
percentile bootstrap over rounds (rounds resampled with replacement, the median recomputed). A
ratio whose interval contains 1 is reported as "no measurable difference".
"""
from __future__ import annotations

import random
import statistics
from typing import Sequence

NO_DIFFERENCE = "no measurable difference"


def bootstrap_median_ci(values: Sequence[float], resamples: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the median of ``values`` (seeded: reproducible)."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return values[0], values[0]
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    lo = meds[int(tail * (resamples - 1))]
    hi = meds[int(round((1 - tail) * (resamples - 1)))]
    return lo, hi


def verdict(lo: float, hi: float, a: str, b: str) -> str:
    """``NO_DIFFERENCE`` when [lo, hi] contains 1, else which side is faster and by how much."""
    if lo <= 1.0 <= hi:
        return NO_DIFFERENCE
    if hi < 1.0:
        return f"{a} faster ({(1 - hi) * 100:.1f}-{(1 - lo) * 100:.1f}% less time)"
    return f"{a} slower ({(lo - 1) * 100:.1f}-{(hi - 1) * 100:.1f}% more time than {b})"


def paired_ratio(a: Sequence[float], b: Sequence[float], name_a: str = "a",
                 name_b: str = "b") -> dict:
    """Per-round ratios ``a[i] / b[i]``: their median, bootstrap 95% interval and verdict."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    per_round = [x / y for x, y in zip(a, b)]
    lo, hi = bootstrap_median_ci(per_round)
    return {"ratio": statistics.median(per_round), "ci95": [lo, hi], "rounds": len(per_round),
            "verdict": verdict(lo, hi, name_a, name_b), "per_round": per_round}


def rotated(names: Sequence[str], r: int) -> list[str]:
    """``names`` rotated left by ``r``: round r starts with a different variant each time."""
    k = r % len(names) if names else 0
    return [*names[k:], *names[:k]]


def fmt_ratio(q: dict | None) -> str:
    """``"1.012 [0.998, 1.027]"``, "-" for a missing comparison."""
    if not q:
        return "-"
    lo, hi = q["ci95"]
    return f"{q['ratio']:.3f} [{lo:.3f}, {hi:.3f}]"
