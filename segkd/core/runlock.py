"""One run per run directory: a lock file naming the process that holds it.

``<run_dir>/segkd.lock`` holds ``{"pid", "host", "started", "command"}`` (and, on Linux, the
process start time, so that a recycled PID is not mistaken for the holder). It is created
atomically (written to a temporary file, then hard-linked to its name, which fails when the
name exists), so a second run on the same directory never sees a half-written lock and is
refused with the holder's PID and host. A lock left by a process that no longer runs on this
host (kill -9, power loss) is taken over, and the run says so. A lock from another host cannot
be checked and is never taken over: the message names the file to delete.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from segkd.core.distributed import is_rank_zero
from segkd.core.errors import SegkdError

LOCK_NAME = "segkd.lock"


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces: cut after it
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: Optional[str]) -> bool:
    """Whether ``pid`` runs on this host and is the same process that wrote the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    now = _start_time(pid)
    if now is not None and start is not None and now != start:
        return False  # the PID was recycled by another process
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")  # a zombie has finished running


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:500]}


def _read(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _create(path: Path, holder: dict) -> bool:
    """Create ``path`` holding ``holder`` atomically; False when it already exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(holder) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create (then write) instead
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(holder) + "\n")
        return True
    finally:
        tmp.unlink(missing_ok=True)


def acquire(run_dir: Path, say: Callable[[str], None]) -> dict:
    """Lock ``run_dir`` for this process (a SegkdError names the holder when it is in use)."""
    path, me = run_dir / LOCK_NAME, _holder()
    for _ in range(3):
        if _create(path, me):
            return me
        held = _read(path)
        if held is None:
            raise SegkdError(f"run directory {run_dir} is locked by {path}, which cannot be read; "
                             "if no run uses this directory, delete that file")
        if held.get("host") == me["host"] and not _alive(held["pid"], held.get("start")):
            say(f"run directory {run_dir}: taking over the lock of process {held['pid']} "
                f"(started {held.get('started', '?')}), which no longer runs")
            path.unlink(missing_ok=True)
            continue
        where = "this host" if held.get("host") == me["host"] else f"host {held.get('host')}"
        raise SegkdError(f"run directory {run_dir} is in use by process {held['pid']} on {where} "
                         f"(since {held.get('started', '?')}); wait for it or choose another "
                         f"--run-dir; if that process no longer runs, delete {path}")
    raise SegkdError(f"could not lock run directory {run_dir} ({path} keeps reappearing)")


def release(run_dir: Path, holder: dict) -> None:
    """Remove the lock if it is still this process's."""
    path = run_dir / LOCK_NAME
    held = _read(path)
    if held is not None and held.get("pid") == holder["pid"] and held.get("host") == holder["host"]:
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block (only in the first process of a run: it
    holds the lock for all of them)."""
    if not is_rank_zero():
        yield
        return
    holder = acquire(run_dir, say)
    try:
        yield
    finally:
        release(run_dir, holder)
