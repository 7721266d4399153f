"""Time estimates of the suite's jobs, and the cut that keeps a tier within ``--budget`` seconds.

An estimate is start-up (imports, models, batches) + compilation + every variant's steps:
``variants x (warmup + iters) x steps x seconds per step``. Seconds per step scale with the
pixels of a batch from a measured reference per (device, pair, precision): on the CPU the KD
steps of docs/benchmarks.md (1 thread, AVX512-BF16); on a GPU a deliberately generous guess for
an H200 (no GPU run has calibrated it yet), with a floor for kernel-launch-bound small batches.
The plan is ordered most informative first; jobs that would end past the budget are left out.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

# (device, pair, precision) -> seconds of one KD step per batch pixel (batch x H x W)
PER_PIXEL = {
    ("cpu", "unet", "bf16"): 1.8 / (8 * 192 * 256), ("cpu", "unet", "32"): 3.4 / (8 * 192 * 256),
    ("cpu", "deeplab", "bf16"): 0.82 / (8 * 96 * 128), ("cpu", "deeplab", "32"): 1.6 / (8 * 96 * 128),
    ("cpu", "tiny", "bf16"): 0.02 / (2 * 32 * 32), ("cpu", "tiny", "32"): 0.02 / (2 * 32 * 32),
    ("cuda", "unet", "bf16"): 2e-3 / (192 * 256), ("cuda", "unet", "32"): 5e-3 / (192 * 256),
    ("cuda", "deeplab", "bf16"): 6e-3 / (256 * 256), ("cuda", "deeplab", "32"): 15e-3 / (256 * 256),
}
LAUNCH_FLOOR = {"cpu": 0.0, "cuda": 0.015}  # s per step at small batches (launch-bound)
STARTUP = {"cpu": 20.0, "cuda": 30.0}  # interpreter, models, batches, CUDA context
COMPILE = {"cpu": (90.0, 30.0), "cuda": (60.0, 10.0)}  # (first student, each further variant)
DATA_JOB = {"cpu": 90.0, "cuda": 90.0}
MEAN_VARIANT = 0.8  # a variant's step relative to a KD step (student, teacher are cheaper)


@dataclass
class Estimate:
    """Seconds of one job, and how they were made up."""

    seconds: float
    detail: str


def estimate_step(a: argparse.Namespace, n_variants: int) -> Estimate:
    """The estimate of one ``bench_step.py`` run from its parsed arguments."""
    dev = a.device.split(":")[0]
    dev = dev if dev in STARTUP else "cpu"  # an unknown device is estimated as a CPU
    h, w = (int(v) for v in a.size.split(","))
    per_px = PER_PIXEL.get((dev, a.pair, a.precision), PER_PIXEL[(dev, "deeplab", "32")])
    step = max(LAUNCH_FLOOR.get(dev, 0.0), per_px * a.batch * h * w)
    calls = n_variants * (a.warmup + a.iters) * a.steps + n_variants  # + the memory pass
    timed = calls * step * MEAN_VARIANT
    first, more = COMPILE.get(dev, COMPILE["cpu"])
    comp = first + more * (n_variants - 2) if a.compile else 0.0
    start = STARTUP.get(dev, 20.0)
    detail = (f"{start:.0f} start + {calls} steps x {step * MEAN_VARIANT:.3f} s"
              + (f" + {comp:.0f} compile" if comp else ""))
    return Estimate(start + timed + comp, detail)


def estimate_data(a: argparse.Namespace) -> Estimate:
    dev = a.device.split(":")[0]
    return Estimate(DATA_JOB.get(dev, 90.0), "loader rounds + step rounds (flat guess)")


def within_budget(estimates: list[float], budget: float | None) -> list[bool]:
    """Which jobs, in plan order, fit: a job is kept while the kept total stays within the
    budget (a later, shorter job may still fit after a longer one is left out)."""
    if budget is None:
        return [True] * len(estimates)
    keep, total = [], 0.0
    for e in estimates:
        fits = total + e <= budget
        keep.append(fits)
        total += e if fits else 0.0
    return keep
