"""No absolute path of one machine in what the repository ships: configs/, docs/ (stored results
included), benchmarks/ and the README. A run directory, a teacher or a data root is written
relative to the checkout (``runs/<study>``, ``../shared/teachers/...``), so that a study spec or a
documented command means the same on every machine.

Allowed: URLs, and the few system paths below that name the same thing on every POSIX machine."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["configs", "docs", "benchmarks", "README.md"]

# Every allowed absolute path, explicitly (prefixes end with "/").
ALLOWED = {
    "/dev/null",
    "/proc", "/proc/cpuinfo", "/proc/self/status", "/proc/self/clear_refs",  # Linux's own
    "/usr/bin/env", "/bin/bash", "/bin/sh", "/usr/bin/time",  # shebangs, the time(1) tool
    "/usr/bin/chromium", "/etc/xdg/pip",  # system locations named generically
}

# A slash that starts a path: not after a word character, a dot, a tilde, another slash, ':'
# (URLs), or a shell/glob/markup character that makes it the middle of a relative path
# ("$OUT/x", "*/summary.json", "$(basename x)/y", "[/dim]", ">/dev/null").
_START = r"(?<![\w.~/:\-<>$%{}\\*)\]\[])"
_PATH = re.compile(_START + r"/[A-Za-z_][\w.@+\-]*(?:/[\w.@+\-]*)*")
# A one-component match is a path only when it is a top-level directory (FHS, and the usual
# data/work mounts); "/summary.json" or "/run_" in "$d"/run_* are the tails of relative paths.
_TOP = {"bin", "boot", "dev", "etc", "home", "lib", "media", "mnt", "opt", "proc", "root", "run",
        "sbin", "srv", "sys", "tmp", "usr", "var", "work", "data", "scratch", "Users", "workspace"}


def absolute_paths(text: str) -> list[str]:
    """The absolute machine paths in ``text`` that the allow-list does not name."""
    found = []
    for m in _PATH.finditer(text):
        path = m.group(0).rstrip(".")
        parts = path.strip("/").split("/")
        if len(parts) == 1 and parts[0] not in _TOP:
            continue
        if path.rstrip("/") in ALLOWED:
            continue
        found.append(path)
    return found


def _files() -> list[Path]:
    out = []
    for name in SCANNED:
        p = ROOT / name
        out += [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    return out


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (images, checkpoints)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_absolute_machine_paths():
    files = _files()
    assert any("docs/results" in str(f) for f in files)  # the stored results are scanned too
    bad = []
    for f in files:
        text = _text(f)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            bad += [f"{f.relative_to(ROOT)}:{i}: {p}" for p in absolute_paths(line)]
    assert not bad, ("absolute paths of one machine (write them relative to the checkout, e.g. "
                     "runs/<study>, ../shared/...):\n" + "\n".join(bad[:50])
                     + (f"\n... and {len(bad) - 50} more" if len(bad) > 50 else ""))


@pytest.mark.parametrize("text, want", [
    ("out_dir: /work/runs/camvid_methods", ["/work/runs/camvid_methods"]),
    ('"teacher": "/work/shared/teachers/t.pt",', ["/work/shared/teachers/t.pt"]),
    ("segkd study s.yaml --out-dir /tmp/x", ["/tmp/x"]),
    ("cache in /root/.cache/torch.", ["/root/.cache/torch"]),
    ("(`/home/me/data`)", ["/home/me/data"]),
    ("--out /tmp", ["/tmp"]),
    ("see https://github.com/a/b/blob/main/x.py and http://host/p", []),
    ("runs/camvid_methods/kd/kd_resnet18 ../shared/data/camvid ./x/y ~/z", []),
    ("ls docs/results/$1/*/*/summary.json >/dev/null; \"$out\"/run_* [dim]x[/dim]", []),
    ("flags in `/proc/cpuinfo`; #!/usr/bin/env bash; `/dev/null`", []),
    ("images/s, and/or, 1/32 resolution, mIoU / latency", []),
])
def test_detector(text, want):
    assert absolute_paths(text) == want
