"""Output paths checked before any work is done: a command that will write a file or a folder
says at once, in one line, that it cannot (instead of a traceback after minutes of computing).

Nothing is created by the checks: the nearest existing folder above the output receives a
probe file, which is removed at once; the output and its missing parents are made when the
result is written.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from segkd.core.errors import SegkdError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest existing ancestor."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path, what: str, target: Path) -> None:
    """Create and remove a temporary file in ``folder`` (works for root too, unlike os.access)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".segkd-write-test-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise SegkdError(f"cannot write {what} {target}: {folder} is not writable "
                         f"({err.strerror or err})") from None


def check_output_file(path: str | Path, what: str) -> Path:
    """Fail early when the file ``path`` cannot be written (a folder, under a file, read-only)."""
    path = Path(path)
    if path.is_dir():
        raise SegkdError(f"cannot write {what} {path}: it is a folder")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise SegkdError(f"cannot write {what} {path}: {base} is a file, not a folder")
    _probe(base, what, path)
    if path.is_file():  # a writable folder may hold a read-only file: open it, write nothing
        try:
            with open(path, "ab"):
                pass
        except OSError as err:
            raise SegkdError(f"cannot write {what} {path}: {err.strerror or err}") from None
    return path


def check_output_dir(path: str | Path, what: str) -> Path:
    """Fail early when the folder ``path`` cannot be created or written into."""
    path = Path(path)
    base = _nearest_existing(path)
    if not base.is_dir():
        raise SegkdError(f"cannot write {what} {path}: {base} is a file, not a folder")
    _probe(base, what, path)
    return path
