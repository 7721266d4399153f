"""The target, the measured candidates and the choice among them.

Every number in the table is measured on the built model: parameters, FLOPs (one batch-1
forward at the target size) and the median wall-clock latency on the target device. A candidate
meets the target when each given bound holds; the choice prefers students that start from the
teacher's tensors (the CamVid evidence, docs/compress.md), then the largest that fits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from rich.table import Table

from segkd.apps.compress.candidates import TEACHER_INIT, Candidate
from segkd.core.errors import SegkdError

RANK = {**dict.fromkeys(TEACHER_INIT, 0), "cheap": 1, "encoder": 2}


@dataclass
class Target:
    params: Optional[str] = None  # "0.5" (fraction of the teacher's) or "2M" / "500k" / "2000000"
    latency_ms: Optional[float] = None
    device: str = "cpu"
    size: tuple[int, int] = (256, 256)  # (H, W) of the FLOPs / latency input

    def params_limit(self, teacher_params: int) -> Optional[int]:
        return parse_params(self.params, teacher_params) if self.params else None

    def params_fraction(self, teacher_params: int) -> Optional[float]:
        limit = self.params_limit(teacher_params)
        return limit / teacher_params if limit else None

    def describe(self, teacher_params: int) -> str:
        parts = []
        if self.params:
            parts.append(f"params <= {self.params_limit(teacher_params) / 1e6:.2f}M")
        if self.latency_ms:
            parts.append(f"latency <= {self.latency_ms:g} ms ({self.device}, {self.size[0]}x{self.size[1]})")
        return ", ".join(parts) or "none (every candidate meets it)"


def parse_params(text: str, teacher_params: int) -> int:
    """``0.5`` -> half the teacher's parameters; ``2M`` / ``500k`` / ``2000000`` -> a count."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise SegkdError(f"--params: expected a fraction of the teacher's (0.5) or a count "
                         f"(2M, 500k, 2000000), got '{text}'")
    v, unit = float(m[1]), m[2].lower()
    if not unit and v <= 1:
        if v <= 0:
            raise SegkdError("--params must be positive")
        return int(v * teacher_params)
    return int(v * {"": 1, "k": 1e3, "m": 1e6}[unit])


def parse_budget(text: Optional[str]) -> tuple[Optional[int], Optional[float]]:
    """``--budget``: ``2000`` / ``2000steps`` -> (2000 steps, None); ``30m`` / ``2h`` / ``90s``
    -> (None, seconds)."""
    if not text:
        return None, None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(steps?|s|m|min|h)?\s*", text)
    if not m:
        raise SegkdError(f"--budget: expected optimiser steps (2000, 2000steps) or a time "
                         f"(30m, 2h, 90s), got '{text}'")
    v, unit = float(m[1]), m[2] or "steps"
    if unit.startswith("step"):
        return max(1, int(v)), None
    return None, v * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def measure(model, size: tuple[int, int], device: str, latency: bool = True) -> dict:
    """{params, flops, latency_ms[, threads]} of one model (latency: median of 10 batch-1
    forwards after 3 warm-up ones)."""
    import torch

    from segkd.models.cost import count_flops, count_params, measure_latency

    row = {"params": count_params(model), "flops": count_flops(model, size), "latency_ms": None}
    if latency:
        row["latency_ms"] = measure_latency(model, size, device=device, warmup=3, iters=10)["p50_ms"]
        row["threads"] = torch.get_num_threads()  # CPU latency depends on it: the report says it
    return row


def measure_all(cands: list[Candidate], teacher_row: dict, target: Target,
                latency: bool = True) -> None:
    """Fill each candidate's numbers and whether it meets ``target``."""
    limit = target.params_limit(teacher_row["params"])
    need_latency = latency or target.latency_ms is not None
    for c in cands:
        row = measure(c.build(), target.size, target.device, need_latency)
        c.params, c.flops, c.latency_ms = row["params"], row["flops"], row["latency_ms"]
        misses = []
        if limit is not None and c.params > limit:
            misses.append(f"params {c.params / 1e6:.2f}M > {limit / 1e6:.2f}M")
        if target.latency_ms is not None and c.latency_ms > target.latency_ms:
            misses.append(f"latency {c.latency_ms:.1f} > {target.latency_ms:g} ms")
        c.meets, c.miss = not misses, "; ".join(misses)


def choose(cands: list[Candidate], target: Target, teacher_params: int,
           name: Optional[str] = None) -> Candidate:
    """The candidate to train: ``name`` if given, else the best-ranked kind that meets the
    target, largest first. Unreachable targets are an error naming the nearest candidate."""
    if name:
        hit = [c for c in cands if c.name == name]
        if not hit:
            raise SegkdError(f"--candidate '{name}' is not in the plan; candidates: "
                             + ", ".join(c.name for c in cands))
        return hit[0]
    ok = [c for c in cands if c.meets]
    if ok:
        return sorted(ok, key=lambda c: (RANK[c.kind], -c.params))[0]
    near = min(cands, key=lambda c: _excess(c, target, teacher_params))
    raise SegkdError(f"no candidate meets the target ({target.describe(teacher_params)}); the "
                     f"nearest is '{near.name}' ({near.miss}). Relax the target, or train it "
                     f"anyway with --candidate '{near.name}'")


def _excess(c: Candidate, target: Target, teacher_params: int) -> float:
    """How far ``c`` is over the target: the largest ratio value / bound."""
    limit = target.params_limit(teacher_params)
    r = [c.params / limit] if limit else []
    if target.latency_ms is not None and c.latency_ms is not None:
        r.append(c.latency_ms / target.latency_ms)
    return max(r or [0.0])


def _starts(c: Candidate) -> str:
    """The table's short 'starts from' (the chosen one's full mapping is printed below it and
    every candidate's is in plan.json): a long mapping squeezed every column in a narrow log."""
    if c.kind == "cheap":
        return "teacher; new convs fresh"
    if not c.teacher_init:
        return "random init"
    return {"cut": "teacher: blocks", "narrow": "teacher: channels"}.get(c.kind, "teacher: blocks + channels")


def plan_table(teacher_row: dict, cands: list[Candidate], chosen: Optional[Candidate],
               title: str) -> Table:
    """The plan: teacher first, then every candidate with its numbers and whether it fits."""
    t = Table(title=title)
    for c in ("candidate", "kind", "starts from", "params (M)", "% teacher", "GFLOPs", "latency (ms)", "meets"):
        t.add_column(c, justify="left" if c in ("candidate", "kind", "starts from", "meets") else "right")
    lat = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    t.add_row("teacher", "-", "-", f"{teacher_row['params'] / 1e6:.2f}", "100%",
              f"{teacher_row['flops'] / 1e9:.3f}", lat(teacher_row["latency_ms"]), "-", style="dim")
    for c in cands:
        mark = ("yes" if c.meets else f"no: {c.miss}") + ("  <- chosen" if c is chosen else "")
        t.add_row(c.name, c.kind, _starts(c), f"{c.params / 1e6:.2f}",
                  f"{100 * c.params / teacher_row['params']:.0f}%", f"{c.flops / 1e9:.3f}",
                  lat(c.latency_ms), mark, style="bold" if c is chosen else None)
    return t
