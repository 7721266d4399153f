"""Profiling helpers of the step benchmark: one ``torch.profiler`` step per variant, top ops by
self time, and the per-op difference between segkd's KD step and the bare loop's."""
from __future__ import annotations

import time

import torch
from bench_variants import Step, sync


def profile_steps(variants: dict[str, Step], batches: list[dict], device: torch.device,
                  top: int = 15) -> dict:
    """One profiled step of each given variant (after the timed rounds): top ops by self time
    and the op-level difference between ``segkd_kd`` and the bare loop (``bare_kd_tuned``, else
    ``bare_kd``) when both are given."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out: dict = {}
    per_op: dict[str, dict[str, tuple[float, int]]] = {}
    for name, run in variants.items():
        run(batches[:1])  # warm
        sync(device)
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            run(batches[:1])
            sync(device)
        wall = time.perf_counter() - t0
        ev = prof.key_averages()
        per_op[name] = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in ev}
        total = sum(ms for ms, _ in per_op[name].values())
        rows = sorted(per_op[name].items(), key=lambda kv: -kv[1][0])[:top]
        out[name] = {"wall_ms": wall * 1e3, "self_cpu_ms_total": total, **phases(ev),
                     "op_calls": sum(c for _, c in per_op[name].values()),
                     "top": [{"op": k, "self_ms": ms, "calls": c, "pct": 100 * ms / total}
                             for k, (ms, c) in rows]}
    bare = next((k for k in ("bare_kd_tuned", "bare_kd") if k in per_op), None)
    if "segkd_kd" in per_op and bare:
        a, b = per_op["segkd_kd"], per_op[bare]
        diff = {k: (a.get(k, (0, 0))[0] - b.get(k, (0, 0))[0],
                    a.get(k, (0, 0))[1] - b.get(k, (0, 0))[1]) for k in set(a) | set(b)}
        big = sorted(diff.items(), key=lambda kv: -abs(kv[1][0]))[:top]
        out["segkd_minus_bare"] = [{"op": k, "self_ms": ms, "calls": c} for k, (ms, c) in big]
    return out


def phases(events) -> dict[str, float]:
    """Inclusive CPU ms of the optimiser step and of backward (autograd engine functions);
    forward and the rest is what remains of the op self time."""
    opt = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e3
    bwd = sum(e.cpu_time_total for e in events
              if e.key.startswith("autograd::engine::evaluate_function")) / 1e3
    return {"optimizer_ms": opt, "backward_ms": bwd}


def console():
    """A rich console at least 120 columns wide (pipes default to 80, too narrow)."""
    import shutil

    from rich.console import Console

    return Console(width=max(140, shutil.get_terminal_size().columns))


def print_profile(prof: dict) -> None:
    from rich.table import Table

    con = console()
    for name, p in prof.items():
        if name == "segkd_minus_bare":
            continue
        tab = Table(title=f"{name}: one step, wall {p['wall_ms']:.0f} ms (op self time "
                          f"{p['self_cpu_ms_total']:.0f} ms: backward {p['backward_ms']:.0f}, "
                          f"optimizer {p['optimizer_ms']:.0f}), {p['op_calls']} op calls")
        for col in ("op", "self ms", "%", "calls"):
            tab.add_column(col, justify="left" if col == "op" else "right")
        for r in p["top"]:
            tab.add_row(r["op"], f"{r['self_ms']:.1f}", f"{r['pct']:.1f}", str(r["calls"]))
        con.print(tab)
    if "segkd_minus_bare" in prof:
        tab = Table(title="segkd_kd minus the bare loop, per op (self ms, calls)")
        for col in ("op", "self ms", "calls"):
            tab.add_column(col, justify="left" if col == "op" else "right")
        for r in prof["segkd_minus_bare"]:
            tab.add_row(r["op"], f"{r['self_ms']:+.1f}", f"{r['calls']:+d}")
        con.print(tab)


