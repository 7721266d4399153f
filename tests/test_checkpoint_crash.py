"""The checkpoint crash window: a failure at any step of writing ``last.pt`` and its sha256
sidecar (disk full, or the process killed there) leaves a checkpoint that loads and verifies,
the new one or the previous one, never a pair refused as corrupt."""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
import torch
from conftest import SHARED, require_shared

import segkd.core.checkpoint as ckmod
from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.core.errors import CheckpointError

OLD, NEW = {"v": torch.zeros(64)}, {"v": torch.ones(64)}


class Killed(BaseException):
    """Stands for kill -9 at one step: nothing after it runs (the test disables the cleanup)."""


class Faults:
    """Counts the write steps of a save (every file write, fsync and rename) and fails step
    ``k``: writes half of the bytes of that write first, then raises ``exc``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, k: int, exc: BaseException) -> None:
        self.k, self.exc, self.steps = k, exc, 0
        real_open, real_replace, real_fsync = open, os.replace, os.fsync
        faults = self

        class File:  # wraps a real binary file: its writes are steps
            def __init__(self, *a, **kw):
                self.f = real_open(*a, **kw)

            def write(self, data) -> int:
                data = bytes(data)
                if faults.tick():
                    self.f.write(data[: len(data) // 2])
                    raise faults.exc
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        def step(real):
            def call(*a, **kw):
                if faults.tick():
                    raise faults.exc
                return real(*a, **kw)
            return call

        monkeypatch.setattr(ckmod, "open", File, raising=False)
        monkeypatch.setattr(ckmod.os, "replace", step(real_replace))
        monkeypatch.setattr(ckmod.os, "fsync", step(real_fsync))

    def tick(self) -> bool:
        self.steps += 1
        return self.steps == self.k


def _caused_by(err: BaseException | None, kind: type) -> bool:
    while err is not None and not isinstance(err, kind):
        err = err.__cause__ or err.__context__
    return err is not None


def _loads_old_or_new(path: Path) -> str:
    v = load_checkpoint(path)["v"]  # verifies the sidecar: raises on a mismatch
    assert torch.equal(v, OLD["v"]) or torch.equal(v, NEW["v"])
    return "new" if torch.equal(v, NEW["v"]) else "old"


@pytest.mark.parametrize("mode", ["enospc", "kill"])
@pytest.mark.parametrize("first", [False, True], ids=["over-previous", "first-save"])
def test_a_failure_at_every_write_step_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, mode,
                                                                     first):
    outcomes, k = [], 1
    while True:
        folder = tmp_path / f"k{k}"
        path = folder / "last.pt"
        if not first:
            save_checkpoint(OLD, path)
        with monkeypatch.context() as m:
            exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if mode == "enospc" else Killed()
            if mode == "kill":  # kill -9 runs no cleanup: temp files stay where they are
                m.setattr(ckmod, "_discard", lambda *paths: None)
            faults = Faults(m, k, exc)
            try:
                save_checkpoint(NEW, path)
            except CheckpointError as err:
                assert mode == "enospc" and "No space left on device" in str(err)
            except BaseException as err:  # torch.save's zip writer re-raises as RuntimeError
                assert mode == "kill" and _caused_by(err, Killed), err
        if faults.steps < k:  # step k does not exist: every step has been failed once
            assert _loads_old_or_new(path) == "new"
            break
        if first and not path.exists():
            outcomes.append("none")  # nothing was ever saved: nothing to load, no half file
        else:
            outcomes.append(_loads_old_or_new(path))
        if mode == "enospc":  # an error cleans up: only the pair remains
            assert sorted(p.name for p in folder.iterdir()) in (["last.pt", "last.pt.sha256"], [])
        save_checkpoint(NEW, path)  # the next save works over whatever the failure left
        assert _loads_old_or_new(path) == "new"
        k += 1
    assert len(outcomes) >= 6, outcomes  # torch.save's writes, fsyncs, three renames
    before = "none" if first else "old"
    assert outcomes[0] == before and outcomes[-1] == "new", outcomes  # both sides of the window


def test_an_old_format_pair_still_loads_and_is_still_verified(tmp_path):
    """A checkpoint written before the two-line sidecar: file + one-line sidecar."""
    path = tmp_path / "old.pt"
    torch.save(NEW, path)
    path.with_name("old.pt.sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    assert torch.equal(load_checkpoint(path)["v"], NEW["v"])
    save_checkpoint(OLD, path)  # overwriting it goes through the window and ends as one line
    assert torch.equal(load_checkpoint(path)["v"], OLD["v"])
    assert len(path.with_name("old.pt.sha256").read_text().split()) == 1
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path)


def test_the_shared_teacher_checkpoint_still_verifies():
    path = SHARED / "teachers" / "camvid-unet-r34-128x96.pt"
    require_shared(path)
    assert path.with_name(path.name + ".sha256").is_file()
    ck = load_checkpoint(path)  # reads its one-line sidecar and checks the hash
    assert ck["format"] == "segkd-checkpoint" and ck["state_dict"]
