"""A page loaded in a real headless Chromium (Debian's ``chromium`` package), driven with
its DevTools protocol over a pipe (``--remote-debugging-pipe``: no port, no network):
the console errors it reported, what it says of every image, and a screenshot.

Tests call ``chromium_or_skip()`` first: without a chromium the test skips with the
reason, except under CI=true, where the set-up installs one (.ci/install.sh).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--remote-debugging-pipe"]
# What the page reports of each image, read inside the page once it has loaded.
IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, "
             "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))")


def chromium_or_skip() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on this machine (apt-get install chromium; .ci/install.sh does)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PageCheck:
    console_errors: list[str]  # console.error calls, uncaught exceptions, browser log errors
    images: list[dict]  # alt, complete, width, height (natural size) of every <img>
    height: int  # of the laid-out page, CSS pixels


class _DevTools:
    """The DevTools protocol over Chromium's pipe: JSON messages ending in a NUL byte,
    commands on the browser's fd 3, answers and events on its fd 4."""

    def __init__(self, chromium: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.process = subprocess.Popen(
            # bash puts the pipe ends where Chromium looks for them (sh takes one-digit fds only)
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', chromium,
             *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline - time.monotonic()))
        return next(e for e in self.events if e.get("method") == method)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"chromium said nothing for {timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                err = self.process.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"chromium closed its pipe: {err}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


def load_page(path: Path, profile: Path, screenshot: Path | None = None,
              width: int = 1280) -> PageCheck:
    """Loads ``path`` (file://) in a fresh headless Chromium with profile folder ``profile``;
    with ``screenshot``, saves the whole page there as a PNG."""
    chromium = chromium_or_skip()
    browser = _DevTools(chromium, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                     session=session)
        browser.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        images = json.loads(browser.send("Runtime.evaluate", {"expression": IMAGES_JS,
                                                              "returnByValue": True},
                                         session=session)["result"]["value"])
        size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        if screenshot is not None:
            shot = browser.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                         "scale": 1}}, session=session)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        errors = []
        for event in browser.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif event.get("method") == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return PageCheck(errors, images, int(size["height"]))
    finally:
        browser.close()
