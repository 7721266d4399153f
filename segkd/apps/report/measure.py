"""Parameters, GFLOPs and PyTorch latency of each row's model for the report, with the latency
code of ``segkd info --compare`` (segkd.apps.deploy_compare.LatencySetup, segkd.models.cost).

The model is the group's first checkpoint (best.pt, else last.pt). Results committed without
checkpoints still have the architecture: summary.json's spec (and its replaced convolutions)
rebuilds it with random weights, which compute exactly what the trained weights would; the
report says which rows were measured that way.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

from segkd.apps.deploy_compare import LatencySetup, spread_warning, torch_threads
from segkd.apps.report.analysis import Analysis
from segkd.apps.report.roles import checkpoint_of


def default_size(analysis: Analysis) -> tuple[int, int]:
    """The input size most runs were trained at (config data.size, else data.crop, else the
    dataset's own ``size`` option, e.g. the synthetic set's), else 512x512."""
    sizes: Counter = Counter()
    for group in analysis.groups.values():
        for run in group:
            data = (run.get("config") or {}).get("data") or {}
            size = data.get("size") or data.get("crop") or (data.get("options") or {}).get("size")
            if size:
                sizes[tuple(int(v) for v in size)] += 1
    return sizes.most_common(1)[0][0] if sizes else (512, 512)


def _model(row: dict, analysis: Analysis):
    """(model, where it came from) for a row: a checkpoint, else the summary's spec."""
    from segkd.models.spec import build_from_spec, load_model

    if row.get("external"):
        path = (analysis.teacher or {}).get("checkpoint")
        if path and Path(path).is_file():
            return load_model(path)[0], "checkpoint"
        return None, "no checkpoint"
    group = analysis.groups[row["key"]]
    for run in group:
        ckpt = checkpoint_of(run)
        if ckpt is not None:
            return load_model(ckpt)[0], "checkpoint"
    summary = group[0]["summary"]
    if not summary.get("model"):
        return None, "no checkpoint, no spec"
    return build_from_spec(summary["model"], summary.get("replacements")).eval(), "spec"


def measure(analysis: Analysis, setup: LatencySetup, size: Optional[tuple[int, int]] = None,
            log=None) -> str:
    """Fill each row's ``gflops``, ``latency_ms``, ``latency_std_ms``, ``measured_from`` (and
    ``params`` where summary.json has none); set and return ``analysis.latency``, the setup in
    words. ``log``: a callable told about each model (it takes a while on a CPU)."""
    size = tuple(size) if size else default_size(analysis)
    setup.check()
    from_spec: list[str] = []
    done: dict[str, dict] = {}  # one measurement per architecture: the same model, the same time
    for row in analysis.rows:
        arch = _architecture(row, analysis)
        if arch not in done:
            model, source = _model(row, analysis)
            done[arch] = {"measured_from": source}
            if model is not None:
                if log:
                    log(f"measuring {row['id']} {row['method']} ({source})")
                done[arch].update(_measure_one(model, setup, size, f"{row['id']} {row['method']}",
                                               analysis.notes))
        row.update(done[arch], params=row.get("params") or done[arch].get("params"))
        if row["measured_from"] == "spec":
            from_spec.append(row["id"])
    threads = setup.threads or _threads()
    analysis.latency = (f"PyTorch, {setup.device}, {setup.dtype}, batch {setup.batch}, "
                        f"{threads} thread(s), {size[0]}x{size[1]} (HxW); mean ± std of "
                        f"{setup.iters} forwards after {setup.warmup} warm-up")
    if from_spec:
        analysis.notes.append(f"{', '.join(from_spec)}: no checkpoint in the run directory; "
                              "GFLOPs and latency measured on the architecture rebuilt from "
                              "summary.json (random weights: the same computation)")
    return analysis.latency


def _architecture(row: dict, analysis: Analysis) -> str:
    """What fixes a model's cost: its spec and replaced convolutions (one key per row when unknown)."""
    if row.get("external"):
        return "external teacher"
    summary = analysis.groups[row["key"]][0]["summary"]
    if not summary.get("model"):
        return f"row {row['key']}"
    return json.dumps([summary["model"], summary.get("replacements") or []], sort_keys=True)


def _measure_one(model, setup: LatencySetup, size: tuple[int, int], name: str, notes: list[str]) -> dict:
    from segkd.models.cost import count_flops, count_params

    with torch_threads(setup.threads):
        gflops = count_flops(model, size) / 1e9
    lat = setup.measure(model, size)
    notes += spread_warning(name, "PyTorch", lat, setup.iters)
    return {"params": count_params(model), "gflops": gflops, "latency_ms": lat["mean_ms"],
            "latency_std_ms": lat["std_ms"]}


def _threads() -> int:
    import torch

    return torch.get_num_threads()
