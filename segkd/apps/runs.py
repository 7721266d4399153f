"""Run directories and the high-level ``train`` entry used by the CLI, demo and studies.

A run directory holds one run. ``run_training`` refuses, before anything is written:
- a directory another process is training in (``segkd.lock``, see :mod:`segkd.core.runlock`);
- without ``resume``: a directory that holds a run (``summary.json``: finished; ``last.pt``:
  stopped, continue it with ``--resume``). Leftovers of a run that stopped before its first
  checkpoint (``metrics.jsonl``, ``best.pt``) are removed, and the run says so;
- with ``resume``: a config that differs from the saved one (``config.yaml``) in any key but
  RESUME_MAY_CHANGE (where and how fast it runs, not what it computes); the message lists every
  difference. Resuming a finished run does nothing: it says so and returns its summary.
"""
from __future__ import annotations

import json
import re
import time
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from rich.console import Console

from segkd.config.schema import Config, load_config
from segkd.core.distributed import is_rank_zero
from segkd.core.errors import SegkdError
from segkd.core.runlock import run_lock

# Keys that may differ on --resume: the device, loader workers, threads, cache, log cadence and
# progress bars, compilation, the data's location and the (unused on resume) out_dir.
RESUME_MAY_CHANGE = ("trainer.accelerator", "trainer.threads", "trainer.progress",
                     "trainer.log_every", "trainer.compile", "data.num_workers", "data.cache",
                     "data.root", "out_dir")
LEFTOVERS = ("metrics.jsonl", "best.pt", "best.pt.sha256")
console = Console(stderr=True, soft_wrap=True, highlight=False)


def new_run_dir(cfg: Config, out_dir: str | None = None) -> Path:
    """``<out_dir>/<name>-s<seed>-<timestamp>`` (unique)."""
    base = Path(out_dir or cfg.out_dir)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.name}-s{cfg.seed}")
    path = base / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    i = 1
    while path.exists():
        path = base / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{i}"
        i += 1
    return path


def check_writable(path: Path) -> None:
    """Fail early, with the path, when the run directory cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SegkdError(f"cannot write to run directory {path}: {err.strerror or err}") from None


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.0.c": value}`` for every leaf of nested dicts / lists (lists of scalars are leaves)."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        items = enumerate(node)
    else:
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if not out and prefix:
        out[prefix] = node  # an empty dict / list is a value of its own
    return out


def config_differences(saved: Config, new: Config, allowed: tuple[str, ...] = ()) -> list[str]:
    """``"key: saved -> new"`` for every key whose value differs (keys matching ``allowed``
    globs excluded)."""
    a, b = flatten(saved.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    missing = object()
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        old, now = a.get(key, missing), b.get(key, missing)
        if old != now and not any(fnmatchcase(key, g) for g in allowed):
            show = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
            diffs.append(f"{key}: {show(old)} -> {show(now)}")
    return diffs


def _check_resume(rd: Path, cfg: Config) -> None:
    """Refuse to continue ``rd`` with a config that computes something else than its own."""
    saved_path = rd / "config.yaml"
    if not saved_path.is_file():
        return  # a run directory without config.yaml: last.pt's own config is rebuilt from
    diffs = config_differences(load_config(saved_path), cfg, RESUME_MAY_CHANGE)
    if diffs:
        raise SegkdError(f"cannot resume {rd} with a different config ({len(diffs)} "
                         f"difference(s) from {saved_path}): " + "; ".join(diffs) +
                         f". Resume without a config (or with the same one); only "
                         f"{', '.join(RESUME_MAY_CHANGE)} may change")


def _check_fresh(rd: Path) -> None:
    """Refuse to start a new run in a directory holding one; clear a stopped run's leftovers."""
    if (rd / "summary.json").is_file():
        raise SegkdError(f"run directory {rd} holds a finished run (summary.json); choose another "
                         "--run-dir (or none: a new directory is made), or delete it first")
    if (rd / "last.pt").is_file():
        raise SegkdError(f"run directory {rd} holds a stopped run (last.pt); continue it with "
                         f"--resume {rd}, or choose another --run-dir")
    stale = [n for n in LEFTOVERS if (rd / n).is_file()]
    if stale:
        console.print(f"run directory {rd}: removing {', '.join(stale)} left by a run that "
                      "stopped before its first checkpoint")
        for name in stale:
            (rd / name).unlink()


def _finished(rd: Path) -> dict:
    """The summary of a finished run, after saying there is nothing to resume."""
    path = rd / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SegkdError(f"cannot read {path}: {err}") from None
    console.print(f"run {rd} is finished (summary.json, {summary.get('finished', 'date unknown')}): "
                  "nothing to resume")
    return summary


def run_training(config: str | None, overrides: list[str], run_dir: str | None = None,
                 resume: str | None = None, out_dir: str | None = None) -> tuple[Path, dict]:
    """Train / distill from a config file (or resume a run directory). Returns (dir, summary).

    Resuming a finished run returns its saved summary without training."""
    if resume:
        rd = Path(resume)
        if not (rd / "last.pt").is_file():
            raise SegkdError(f"cannot resume: {rd / 'last.pt'} not found")
        cfg = load_config(config or rd / "config.yaml", overrides)
    else:
        cfg = load_config(config, overrides)
        rd = Path(run_dir) if run_dir else new_run_dir(cfg, out_dir)
    check_writable(rd)
    with run_lock(rd, console.print):  # the checks see the directory no other run can change
        if is_rank_zero():  # the other processes of a multi-process run: checked by the first
            if resume:
                _check_resume(rd, cfg)
                if (rd / "summary.json").is_file():
                    return rd, _finished(rd)
            else:
                _check_fresh(rd)
        from segkd.engine import Engine  # after the config is valid: a typo fails without torch

        summary = Engine(cfg, rd, resume=bool(resume)).run()
    return rd, summary
