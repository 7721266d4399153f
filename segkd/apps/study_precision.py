"""A study's runs in one precision: ``trainer.precision: auto`` resolves per machine (bf16-mixed
on a CPU with AVX512-BF16 or AMX and on a GPU, fp32 on other CPUs), so a study resumed on another
machine could train its remaining runs in another precision than its finished ones, and the
report would keep the two apart. :func:`check_precision` says so before anything trains."""
from __future__ import annotations

import json
from typing import Optional

from segkd.config.schema import load_config


def _finished_precisions(arms: list) -> dict[str, list]:
    """Resolved precision (summary.json's precision.value) -> the finished arms (segkd.apps.study
    ``Arm``) trained in it."""
    seen: dict[str, list] = {}
    for a in arms:
        for d in (a.run_dir, a.mirror):
            f = d / "summary.json" if d is not None else None
            if f is not None and f.is_file():
                try:
                    p = json.loads(f.read_text()).get("precision") or {}
                except (OSError, ValueError):
                    break
                if isinstance(p, dict) and p.get("value"):
                    seen.setdefault(str(p["value"]), []).append(a)
                break
    return seen


def check_precision(study: str, arms: list, extra: list[str]) -> Optional[str]:
    """Why the runs left to train would use another precision than the study's finished runs
    (``trainer.precision: auto`` resolves per machine: bf16-mixed on a CPU with AVX512-BF16,
    fp32 on one without), or None. The report keeps such runs apart, so a study resumed on
    another machine would end with two half-studies; pinning the precision in the spec's ``set``
    keeps it one."""
    from segkd.engine.runtime import resolve_runtime

    seen = _finished_precisions(arms)
    todo = [a for a in arms if a.status != "done"]
    if not seen or not todo:
        return None
    a = todo[0]
    if a.status == "partial":
        cfg = load_config(str(a.run_dir / "config.yaml"), list(extra))
    elif a.config is not None:
        cfg = load_config(a.config, a.overrides + list(extra))
    else:
        return None
    rt = resolve_runtime(cfg.trainer)
    if rt.precision in seen:
        return None
    before = ", ".join(f"{p} ({len(v)} run(s), e.g. {v[0].method} s{v[0].seed})" for p, v in seen.items())
    pinned = next(iter(seen)) if len(seen) == 1 else "32"
    return (f"study {study}: its finished runs trained in precision {before}; here "
            f"{a.method} s{a.seed} would train in {rt.precision} ({rt.reason}), and the report keeps "
            f"the two apart. Pin it: add \"trainer.precision={pinned}\" to the spec's set")
