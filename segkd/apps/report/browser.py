"""Open a report page in headless Chromium: its rendered DOM, every URL it asked for, and a
screenshot (``segkd report --html OUT.html --screenshot``; the report's browser test).

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: file
descriptors 3 and 4, JSON messages ended by a NUL byte), so no port is opened and no websocket
library is needed. A fresh profile directory is used and removed afterwards.
"""
from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from segkd.core.errors import SegkdError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-extensions", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--mute-audio", "--remote-debugging-pipe")
LOCAL = ("file:", "data:", "about:", "blob:")


def find_browser() -> Optional[str]:
    """The path of a Chromium / Chrome executable on PATH, or None."""
    return next((p for name in BROWSERS if (p := shutil.which(name))), None)


@dataclass
class Rendered:
    """What the browser saw: ``dom`` (the document's HTML after rendering), ``requests`` (every
    URL the page asked for, its own file included), ``images`` ((natural width, alt text) of
    every <img>: width 0 is an image the browser could not decode), ``height`` (of the page,
    CSS pixels)."""

    dom: str
    requests: list[str] = field(default_factory=list)
    images: list[tuple[int, str]] = field(default_factory=list)
    height: int = 0

    def network(self) -> list[str]:
        """The requests that would leave the machine (anything but file:, data:, about:, blob:)."""
        return [u for u in self.requests if not u.startswith(LOCAL)]


class _DevTools:
    """One DevTools protocol connection over the browser's pipe."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int, timeout: float):
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.deadline = time.monotonic() + timeout
        self.buffer, self.events, self.next_id = b"", [], 0

    def _message(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise SegkdError("the browser did not answer in time" if left <= 0 else
                                 f"the browser exited (code {self.proc.returncode})")
            if select.select([self.read_fd], [], [], min(left, 1.0))[0]:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise SegkdError("the browser closed its DevTools pipe")
                self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise SegkdError(f"browser: {method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._message())


def _high(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


def _start(exe: str, profile: str) -> tuple[subprocess.Popen, int, int]:
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    child_in, child_out = _high(to_child_r), _high(from_child_w)  # never 3 or 4 themselves

    def fds() -> None:  # in the child, before exec: the browser reads fd 3, writes fd 4
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    try:
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False)
    finally:
        for fd in (to_child_r, from_child_w, child_in, child_out):
            os.close(fd)
    return proc, to_child_w, from_child_r


def render(html: str | Path, screenshot: Optional[str | Path] = None, width: int = 1280,
           max_height: int = 2400, timeout: float = 90.0, browser: Optional[str] = None) -> Rendered:
    """Load ``html`` (a file) in headless Chromium; return its rendered DOM and requests, and
    with ``screenshot`` write a PNG of the page ``width`` CSS pixels wide (at most
    ``max_height`` high: the top of a long page)."""
    exe = browser or find_browser()
    if exe is None:
        raise SegkdError(f"no Chromium found (looked for {', '.join(BROWSERS)}); on Debian / "
                         "Ubuntu: apt-get install -y chromium")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="segkd-chromium-") as profile:
        proc, write_fd, read_fd = _start(exe, profile)
        try:
            dt = _DevTools(proc, write_fd, read_fd, timeout)
            target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Network.enable", "Page.enable"):
                dt.call(method, {}, sid)
            _viewport(dt, sid, width, 900)
            dt.call("Page.navigate", {"url": url}, sid)
            dt.wait_event("Page.loadEventFired", sid)
            dom = _evaluate(dt, sid, "document.documentElement.outerHTML")
            images = [tuple(x) for x in _evaluate(
                dt, sid, "Array.from(document.images).map(i => [i.naturalWidth, i.alt])")]
            height = math.ceil(dt.call("Page.getLayoutMetrics", {}, sid)["cssContentSize"]["height"])
            if screenshot:
                _viewport(dt, sid, width, min(height, max_height))
                shot = dt.call("Page.captureScreenshot", {"format": "png"}, sid)["data"]
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                Path(screenshot).write_bytes(base64.b64decode(shot))
            requests = [e["params"]["request"]["url"] for e in dt.events
                        if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == sid]
            try:
                dt.call("Browser.close")
            except SegkdError:
                pass  # it closed before answering
        finally:
            os.close(write_fd)
            os.close(read_fd)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return Rendered(dom=dom, requests=requests, images=images, height=height)


def _evaluate(dt: _DevTools, session: str, expression: str) -> Any:
    return dt.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                   session)["result"]["value"]


def _viewport(dt: _DevTools, session: str, width: int, height: int) -> None:
    dt.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": max(1, height),
                                                   "deviceScaleFactor": 1, "mobile": False}, session)
