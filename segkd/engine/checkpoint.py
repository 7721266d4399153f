"""Checkpoint files: atomic writes, verified loads, never executing code from a file.

A segkd checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)``:

    {"format": "segkd-checkpoint", "version": 1, "kind": "model" | "run",
     "model": {"arch": ..., "kwargs": {...}},      # how to rebuild the architecture
     "replacements": [{"paths", "block", "options"}, ...],  # cheap-conv surgery, in order
     "state_dict": {...}, "meta": {"classes", "num_classes", "mean", "std", "ignore_index"},
     "config": {...} (resolved config), and for kind == "run": "connectors", "optimizer",
     "scheduler", "rng", "progress"}

A sha256 of the file is written beside it (``<file>.sha256``) and checked on load.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

FORMAT = "segkd-checkpoint"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    If writing fails (disk full, permissions), the previous file at ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
        side = path.with_name(path.name + ".sha256")
        side_tmp = side.with_name(side.name + ".tmp")
        side_tmp.write_text(digest + "\n")
        os.replace(side_tmp, side)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {err.strerror or err}") from err
        raise
    return path


def load_checkpoint(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); verify its sha256 when present."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):  # a run directory means its selected model
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    side = path.with_name(path.name + ".sha256")
    if verify and side.is_file() and side.read_text().strip() != sha256_file(path):
        raise CheckpointError(f"checkpoint {path} is corrupt (sha256 differs from {side.name})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        garbage = ("Unsupported operand", "invalid load key", "truncated")  # bytes, not objects
        if any(g in str(err) for g in garbage):
            detail = next(l.strip() for l in str(err).splitlines() if any(g in l for g in garbage))
            raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint "
                                  f"({detail[:200]})") from None
        what = next((l.strip() for l in str(err).splitlines() if "unsupported global" in l.lower()), "")
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain data, "
            f"and loading it could execute code. {what[:200]}".rstrip()) from None
    except Exception as err:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(obj).__name__})")
    return obj


def is_segkd(obj: dict) -> bool:
    return obj.get("format") == FORMAT


def _listing(title: str, items: list[str], n: int = 10) -> str:
    more = f", ... ({len(items) - n} more)" if len(items) > n else ""
    return f"{title} ({len(items)}): {', '.join(items[:n])}{more}"


def load_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load every key, check every shape; a CheckpointError lists missing / unexpected keys and
    shape mismatches (the first 10 of each, with counts)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [_listing(t, x) for t, x in (("missing keys", missing), ("unexpected keys", unexpected),
                                             ("shape mismatches", shapes)) if x]
        raise CheckpointError(f"{source} does not match this architecture "
                              f"('{type(model).__name__}'): " + "; ".join(parts))
    model.load_state_dict(state, strict=True)

