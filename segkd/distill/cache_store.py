"""Row arrays of the teacher cache: in memory, or memory-mapped files built safely on disk.

An array holds one tensor per row (a row is one (image, view) pair) of a fixed shape and dtype.
On disk, ``<name>.bin`` holds the rows back to back (C order) and ``<name>.json`` (the manifest,
written last) its shape, dtype, the cache key and a CRC32 per row. Building writes into
``<name>.partial`` and records finished items in ``<name>.progress.json`` (atomic replace), so
an interrupted build resumes; an exclusive ``flock`` on ``<name>.lock`` lets one process build
while the others wait, then read. A complete file is verified against its checksums when it is
opened: a truncated or corrupt one is rebuilt (never read), one made for another key refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from segkd.core.errors import SegkdError

# storage dtype -> (torch dtype, numpy dtype holding the same bytes)
DTYPES = {"float32": (torch.float32, np.float32), "float16": (torch.float16, np.float16),
          "bfloat16": (torch.bfloat16, np.uint16)}


class CacheError(SegkdError):
    """The teacher cache cannot be used as configured (unwritable, foreign, corrupt)."""


@dataclass(frozen=True)
class ArraySpec:
    """``rows`` rows of ``shape`` in ``dtype`` (a :data:`DTYPES` name), named ``name``."""

    name: str
    rows: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype][1]).itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes


def _to_numpy(t: torch.Tensor, dtype: str) -> np.ndarray:
    """A CPU tensor in the storage dtype as numpy (bf16 as its uint16 bit pattern)."""
    t = t.detach().to("cpu", DTYPES[dtype][0]).contiguous()
    return t.view(torch.uint16).numpy() if dtype == "bfloat16" else t.numpy()


def _to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def row_crc(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


class MemoryArray:
    """Rows in one CPU tensor (this process only)."""

    def __init__(self, spec: ArraySpec) -> None:
        self.spec = spec
        self.data = torch.empty((spec.rows, *spec.shape), dtype=DTYPES[spec.dtype][0])

    def write(self, rows: list[int], values: torch.Tensor) -> None:
        self.data[torch.as_tensor(rows)] = values.detach().to("cpu", self.data.dtype)

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        return self.data[rows]


class DiskArray:
    """A complete, verified ``<name>.bin`` opened read-only as a memory map."""

    def __init__(self, path: Path, spec: ArraySpec) -> None:
        self.spec, self.path = spec, path
        self.map = np.memmap(path, dtype=DTYPES[spec.dtype][1], mode="r",
                             shape=(spec.rows, *spec.shape))

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        return _to_torch(self.map[rows.numpy()], self.spec.dtype)


# ----------------------------------------------------------------------------- files
def _atomic_json(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` so a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there, or raise CacheError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise CacheError(f"teacher cache directory {folder} is not writable ({e.strerror}): set "
                         "teacher.cache.dir to a writable folder, or teacher.cache.storage: memory"
                         ) from None


@contextlib.contextmanager
def locked(folder: Path, names: list[str], say: Callable[[str], None]) -> Iterator[None]:
    """Hold exclusive locks on ``names`` (sorted: no deadlock between two runs); says so when
    another process holds one and this one waits."""
    files = []
    try:
        for name in sorted(names):
            f = open(folder / f"{name}.lock", "a+")
            files.append(f)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"teacher cache: another process is building {folder / name}; waiting")
                fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        for f in files:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()


def _manifest(spec: ArraySpec, key: dict) -> dict:
    return {"format": 1, "name": spec.name, "rows": spec.rows, "shape": list(spec.shape),
            "dtype": spec.dtype, "key": key}


def open_complete(folder: Path, spec: ArraySpec, key: dict,
                  say: Callable[[str], None]) -> DiskArray | None:
    """The finished array ``spec.name`` in ``folder`` after checking it, or None when it must
    be (re)built: missing, truncated or corrupt (removed, with a message). Raises CacheError
    when the file was built for another key (another teacher or other settings)."""
    bin_path, man_path = folder / f"{spec.name}.bin", folder / f"{spec.name}.json"
    if not man_path.is_file():
        return None
    try:
        man = json.loads(man_path.read_text())
    except (OSError, ValueError):
        return _discard(folder, spec, "its manifest is unreadable", say)
    if man.get("key") != key:
        diff = sorted(k for k in set(key) | set(man.get("key") or {})
                      if key.get(k) != (man.get("key") or {}).get(k))
        raise CacheError(f"teacher cache {man_path} was built for another teacher or other "
                         f"settings (differs in: {', '.join(diff)}); remove it or point "
                         "teacher.cache.dir elsewhere")
    crcs = man.get("crc")
    want = {k: v for k, v in _manifest(spec, key).items()}
    if {k: man.get(k) for k in want} != want or not isinstance(crcs, list) or len(crcs) != spec.rows:
        return _discard(folder, spec, "it has another shape or dtype", say)
    if not bin_path.is_file() or bin_path.stat().st_size != spec.nbytes:
        return _discard(folder, spec, "it is truncated", say)
    arr = DiskArray(bin_path, spec)
    bad = next((i for i in range(spec.rows) if row_crc(arr.map[i]) != crcs[i]), None)
    if bad is not None:
        del arr
        return _discard(folder, spec, f"row {bad} fails its checksum (corrupt)", say)
    return arr


def _discard(folder: Path, spec: ArraySpec, why: str, say: Callable[[str], None]) -> None:
    say(f"[yellow]teacher cache {folder / spec.name}.bin: {why}; rebuilding it[/yellow]")
    for suffix in (".json", ".bin", ".partial", ".progress.json"):
        (folder / f"{spec.name}{suffix}").unlink(missing_ok=True)
    return None


class PartialArray:
    """An array being built in ``<name>.partial``; ``done`` maps item -> its rows' CRCs.

    Reopening after an interruption keeps the items whose rows still match their CRCs."""

    def __init__(self, folder: Path, spec: ArraySpec, key: dict, views: int) -> None:
        self.folder, self.spec, self.key, self.views = folder, spec, key, views
        self.path = folder / f"{spec.name}.partial"
        self.progress = folder / f"{spec.name}.progress.json"
        np_dtype = DTYPES[spec.dtype][1]
        fresh = not self.path.is_file() or self.path.stat().st_size != spec.nbytes
        self.map = np.memmap(self.path, dtype=np_dtype, mode="w+" if fresh else "r+",
                             shape=(spec.rows, *spec.shape))
        self.done: dict[int, list[int]] = {} if fresh else self._resume()

    def _resume(self) -> dict[int, list[int]]:
        try:
            prog = json.loads(self.progress.read_text())
        except (OSError, ValueError):
            return {}
        if prog.get("key") != self.key or prog.get("shape") != list(self.spec.shape):
            return {}
        done = {}
        for item, crcs in prog.get("done", {}).items():
            rows = range(int(item) * self.views, (int(item) + 1) * self.views)
            if [row_crc(self.map[r]) for r in rows] == crcs:
                done[int(item)] = crcs
        return done

    def write(self, rows: list[int], values: torch.Tensor) -> None:
        a = _to_numpy(values, self.spec.dtype)
        for r, v in zip(rows, a):
            self.map[r] = v
            item = r // self.views
            crcs = self.done.setdefault(item, [0] * self.views)
            crcs[r % self.views] = row_crc(v)

    SAVE_EVERY_S = 10.0  # progress (and so what a resumed build keeps) at most this old

    def save_progress(self, force: bool = False) -> None:
        """Flush the rows and record them as done (at most every ``SAVE_EVERY_S``: each save
        syncs to disk)."""
        now = time.monotonic()
        if not force and now - getattr(self, "_saved", 0.0) < self.SAVE_EVERY_S:
            return
        self._saved = now
        self.map.flush()
        _atomic_json(self.progress, {"key": self.key, "shape": list(self.spec.shape),
                                     "done": {str(k): v for k, v in self.done.items()}})

    def finish(self) -> DiskArray:
        """Publish the built array: data first, then the manifest that makes it visible."""
        self.map.flush()
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())
        del self.map
        crc = [c for item in range(self.spec.rows // self.views) for c in self.done[item]]
        bin_path = self.folder / f"{self.spec.name}.bin"
        os.replace(self.path, bin_path)
        _atomic_json(self.folder / f"{self.spec.name}.json",
                     {**_manifest(self.spec, self.key), "crc": crc})
        self.progress.unlink(missing_ok=True)
        return DiskArray(bin_path, self.spec)
