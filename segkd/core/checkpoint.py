"""Checkpoint files: atomic writes, verified loads, never executing code from a file.

A segkd checkpoint is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)``:

    {"format": "segkd-checkpoint", "version": 1, "kind": "model" | "run",
     "model": {"arch": ..., "kwargs": {...}},      # how to rebuild the architecture
     "replacements": [{"paths", "block", "options"}, ...],  # cheap-conv surgery, in order
     "state_dict": {...}, "meta": {"classes", "num_classes", "mean", "std", "ignore_index"},
     "config": {...} (resolved config), and for kind == "run": "connectors", "optimizer",
     "scheduler", "rng", "progress"}

A sha256 of the file is written beside it (``<file>.sha256``, one hash per line) and checked
on load: the file is accepted when its hash is one of the sidecar's lines. A sidecar written
before this rule holds one line and reads the same way. A file without a sidecar is checked
against the CRC-32 every record of torch's zip format carries (a legacy, non-zip file without
one cannot be checked: it loads, but ``must_verify`` refuses it).

The file is read once: its hash, the checks and the loaded contents all come from the same
bytes, so a file replaced while it is read can never be loaded under another file's hash.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional

import torch

from segkd.core.errors import CheckpointError, NonFiniteLoss

FORMAT, VERSION = "segkd-checkpoint", 1


def sha256_hex(chunks: Iterable[bytes | memoryview]) -> str:
    """Hex sha256 of the bytes ``chunks`` yields, in order (``[data]`` for one buffer): the
    package's one sha256 (checkpoints and their sidecars, downloads, the teacher cache key)."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    with open(path, "rb") as f:
        return sha256_hex(iter(lambda: f.read(1 << 22), b""))


def model_checkpoint(model: torch.nn.Module, spec: dict, replacements: Optional[list],
                     meta: dict, config: Optional[dict] = None,
                     extra: Optional[dict] = None) -> dict[str, Any]:
    """A model checkpoint (``kind: "model"``: best.pt, an imported or cut teacher; a run's
    ``last.pt`` adds its state to one): ``model``'s weights copied to the CPU, the ``spec`` that
    rebuilds it, the ``replacements`` applied to it and the resolved ``config`` (each left out
    when None: an imported teacher has neither), ``meta`` and ``extra`` entries."""
    ckpt: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": "model", "model": spec}
    if replacements is not None:
        ckpt["replacements"] = replacements
    ckpt["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt["meta"] = meta
    if config is not None:
        ckpt["config"] = config
    return {**ckpt, **(extra or {})}


def nonfinite_keys(state: dict[str, Any]) -> list[str]:
    """Keys of the floating-point tensors in ``state`` that hold NaN or Inf (one host
    synchronisation per device)."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex()) and v.numel():
            by_device.setdefault(v.device, []).append((k, v))
    bad = set()
    for items in by_device.values():
        ok = torch.stack([torch.isfinite(v).all() for _, v in items]).cpu().tolist()
        bad.update(k for (k, _), fine in zip(items, ok) if not fine)
    return [k for k in state if k in bad]


def _refuse_nonfinite(obj: dict[str, Any], path: Path) -> None:
    """NonFiniteLoss, before anything is written, when a parameter or buffer of ``obj``
    (``state_dict``, ``connectors``) holds NaN or Inf: such a file is never a checkpoint."""
    state = obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) else {}
    connectors = obj.get("connectors") if isinstance(obj.get("connectors"), dict) else {}
    bad = nonfinite_keys({**state, **{f"connectors.{k}": v for k, v in connectors.items()}})
    if bad:
        kept = f"the previous {path.name} is kept" if path.is_file() else "no file was written"
        raise NonFiniteLoss(f"refusing to write checkpoint {path}: {bad[0]}"
                            f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''} hold NaN/Inf "
                            f"({kept}); lower the learning rate or a term weight")


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Write ``obj`` to ``path`` and its sidecar so that, whatever step fails or is killed, the
    pair on disk verifies: the previous checkpoint or the new one, never neither.

    1. serialise to ``.<name>.tmp`` beside ``path``, fsync;
    2. sidecar := "<new hash>\n<previous hash>" (temp file, fsync, rename): accepts either file
       (just "<new hash>" when there is no previous file: the file never exists without it);
    3. rename the temp file over ``path`` (atomic);
    4. where step 2 wrote two lines, sidecar := "<new hash>" (temp file, fsync, rename).
    An error (disk full, permissions) raises CheckpointError and removes the temp files; a
    ``state_dict`` or ``connectors`` tensor holding NaN/Inf raises NonFiniteLoss, nothing written.
    """
    path = Path(path)
    _refuse_nonfinite(obj, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = _sidecar(path)
    tmp, side_tmp = path.with_name(f".{path.name}.tmp"), side.with_name(f".{side.name}.tmp")
    try:
        data = _serialise(obj)  # the sidecar vouches for these bytes, not a re-read of tmp
        digest = sha256_hex([data])
        _write_synced(tmp, lambda f: f.write(data))
        previous = _current_hash(path)
        hashes = [digest] + ([previous] if previous not in (None, digest) else [])
        _write_synced(side_tmp, lambda f: f.write("".join(h + "\n" for h in hashes).encode()))
        os.replace(side_tmp, side)  # step 2: from here, either file verifies
        os.replace(tmp, path)  # step 3
        if len(hashes) > 1:  # step 4: only the new file verifies
            _write_synced(side_tmp, lambda f: f.write(f"{digest}\n".encode()))
            os.replace(side_tmp, side)
        _fsync_dir(path.parent)
    except BaseException as err:
        _discard(tmp, side_tmp, *([] if path.exists() else [side]))  # no orphan sidecar
        os_err = _os_error(err)
        if os_err is not None:
            raise CheckpointError(f"could not write checkpoint {path}: "
                                  f"{os_err.strerror or os_err}") from err
        raise
    return path


def _serialise(obj: dict[str, Any]) -> memoryview:
    """``torch.save``'s bytes of ``obj``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer()


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: torch.save reports a failed write as the RuntimeError its
    zip writer raises while closing, with the OSError as its context."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _current_hash(path: Path) -> str | None:
    """The hash that verifies the file now at ``path`` (None when there is none): the sidecar's
    single line, else (no sidecar, or an interrupted write left two lines) the file's own hash."""
    if not path.is_file():
        return None
    side = _sidecar(path)
    lines = side.read_text().split() if side.is_file() else []
    return lines[0] if len(lines) == 1 else sha256_file(path)


def _write_synced(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or truncate ``path``, fill it with ``write(file)``, flush and fsync it."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (best effort: not every platform can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path, run_dir: bool = False) -> Path:
    """The file a checkpoint argument names: the file itself, or for a run directory its
    selected model, ``best.pt``, else ``last.pt`` (``best.pt`` when it holds neither yet).
    ``run_dir``: ``path`` is a run directory, even one not made yet. Every reader of a
    "checkpoint or run directory" argument goes through here."""
    path = Path(path)
    if not (run_dir or path.is_dir()):
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    return path / "best.pt"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read: ``obj`` (its contents), ``path`` (the file), ``sha256`` (of the very
    bytes ``obj`` was loaded from: what a cache key or a record may vouch for) and ``verified``:
    ``"sha256"`` (its sidecar), ``"crc32"`` (no sidecar: every zip record's CRC-32) or ``""``
    (not checked: ``verify=False``, or a legacy non-zip file without a sidecar)."""

    obj: dict[str, Any]
    path: Path
    sha256: str
    verified: str


def read_checkpoint(path: str | Path, verify: bool = True, must_verify: bool = False) -> Checkpoint:
    """Read a checkpoint (a file or a run directory, see :func:`resolve_checkpoint`) once,
    verify it, load it safely (``weights_only=True``). ``must_verify``: refuse a file that
    neither a sidecar nor CRC-32s can check (what ``--resume`` continues from)."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    digest = sha256_hex([data])
    verified = _verify(path, data, digest) if verify else ""
    if must_verify and not verified:
        raise CheckpointError(
            f"cannot verify checkpoint {path}: it has no {_sidecar(path).name} and is not a zip "
            "checkpoint whose CRC-32s could be checked; restore its sidecar or the file, or "
            "start a new run")
    return Checkpoint(_unpickle(path, data), path, digest, verified)


def load_checkpoint(path: str | Path, verify: bool = True, must_verify: bool = False) -> dict[str, Any]:
    """The contents of a checkpoint (see :func:`read_checkpoint`)."""
    return read_checkpoint(path, verify, must_verify).obj


def _verify(path: Path, data: bytes, digest: str) -> str:
    """How ``data`` (the bytes of ``path``) was verified; CheckpointError when it fails."""
    side = _sidecar(path)
    if side.is_file():
        if digest not in side.read_text().split():
            raise CheckpointError(f"checkpoint {path} is corrupt (sha256 differs from {side.name})")
        return "sha256"
    if not data.startswith(b"PK\x03\x04"):
        return ""  # torch's legacy (pre-zip) format carries no checksums
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()  # reads every record, checks its CRC-32
    except Exception as err:  # a damaged header or directory
        raise CheckpointError(f"cannot read checkpoint {path}: a damaged zip archive ({err}), "
                              f"and no {side.name} to check it against") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt (its record '{bad}' fails its "
                              f"CRC-32 check; there is no {side.name})")
    return "crc32"


def _unpickle(path: Path, data: bytes) -> dict[str, Any]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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

