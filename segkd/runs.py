"""Run directories and the high-level ``train`` entry used by the CLI, demo and studies."""
from __future__ import annotations

import re
import time
from pathlib import Path

from .config import Config, load_config
from .errors import SegkdError


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


def run_training(config: str | None, overrides: list[str], run_dir: str | None = None,
                 resume: str | None = None, out_dir: str | None = None) -> tuple[Path, dict]:
    """Train / distill from a config file (or resume a run directory). Returns (dir, summary)."""
    if resume:
        rd = Path(resume)
        if not (rd / "last.pt").is_file():
            raise SegkdError(f"cannot resume: {rd / 'last.pt'} not found")
        cfg = load_config(config or rd / "config.yaml", overrides)
    else:
        cfg = load_config(config, overrides)
        rd = Path(run_dir) if run_dir else new_run_dir(cfg, out_dir)
    check_writable(rd)
    from .engine import Engine  # after the config is valid: a typo fails without importing torch

    summary = Engine(cfg, rd, resume=bool(resume)).run()
    return rd, summary
