"""Open a report in headless Chromium over the DevTools protocol and say what a user would see.

Used by the tests and the benchmark (needs ``chromium`` and the ``websocket-client`` package):
the page's load event, every ``<img>``'s decoded ``naturalWidth``, console errors, uncaught
exceptions, every network request (a self-contained page makes none but its own file and data
URIs), and a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-dev-shm-usage", "--remote-allow-origins=*",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in (os.environ.get("DINOEVAL_CHROMIUM", ""), "chromium", "chromium-browser",
                 "google-chrome", "/usr/bin/chromium"):
        if name and (path := shutil.which(name)):
            return path
    return None


@dataclass
class PageCheck:
    """What the browser saw.

    Attributes:
        loaded: the load event fired.
        images: ``(naturalWidth, naturalHeight, src prefix)`` per ``<img>``.
        console_errors: console errors, log errors and uncaught exceptions, as text.
        requests: URLs the page requested.
        title: ``document.title``.
        page_height: the document's scroll height in CSS pixels.
        overflow_x: the document is wider than the viewport (a horizontal scroll bar).
    """

    loaded: bool
    images: list[tuple[int, int, str]]
    console_errors: list[str]
    requests: list[str]
    title: str
    page_height: int
    overflow_x: bool
    screenshot: bytes | None = field(default=None, repr=False)


class _Cdp:
    def __init__(self, ws_url: str) -> None:
        import websocket

        self.timeout = 120.0
        self.ws = websocket.create_connection(ws_url, timeout=self.timeout,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str, timeout: float) -> bool:
        if any(e["method"] == method for e in self.events):
            return True
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                self.ws.settimeout(max(0.1, end - time.monotonic()))
                try:
                    msg = json.loads(self.ws.recv())
                except Exception:
                    return False
                if "method" in msg:
                    self.events.append(msg)
                    if msg["method"] == method:
                        return True
            return False
        finally:
            self.ws.settimeout(self.timeout)

    def close(self) -> None:
        self.ws.close()


def check_page(path: str | Path, *, width: int = 1400, height: int = 1800,
               screenshot: bool = True, timeout: float = 60.0) -> PageCheck:
    """Load ``path`` in headless Chromium and report images, console errors and requests."""
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("chromium not found (apt-get install chromium)")
    url = Path(path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="dinoeval-chromium-")
    # Chromium forks zygote, GPU and renderer processes that keep writing to the profile for a
    # moment after the browser process exits; give them a process group of their own so that
    # all of them are stopped before the profile is removed.
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port = _devtools_port(Path(profile), proc, timeout)
        cdp = _Cdp(_page_ws_url(port, timeout))
        try:
            return _inspect(cdp, url, width, height, screenshot, timeout)
        finally:
            cdp.close()
    finally:
        _stop_process_group(proc)
        shutil.rmtree(profile, ignore_errors=True)


def _stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM every process in ``proc``'s group, wait up to ``grace`` s, then SIGKILL the rest."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + grace
        while time.monotonic() < end:
            proc.poll()  # reap the leader so the group can empty
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
    proc.wait()


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    marker = profile / "DevToolsActivePort"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode} at start")
        # The file holds "PORT\n/devtools/browser/ID"; wait for both lines (no partial read).
        if marker.exists() and len(lines := marker.read_text().split()) >= 2:
            return int(lines[0])
        time.sleep(0.05)
    raise RuntimeError("chromium did not open its DevTools port")


def _page_ws_url(port: int, timeout: float) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
        except OSError:  # not listening yet
            pages = []
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise RuntimeError("chromium has no page target")


def _inspect(cdp: _Cdp, url: str, width: int, height: int, screenshot: bool,
             timeout: float) -> PageCheck:
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.call(f"{domain}.enable")
    cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
             deviceScaleFactor=1, mobile=False)
    cdp.call("Page.navigate", url=url)
    loaded = cdp.wait_for("Page.loadEventFired", timeout)
    # Let image decoding and any late console messages settle.
    cdp.call("Runtime.evaluate", expression="new Promise(r => setTimeout(r, 300))",
             awaitPromise=True)
    expr = ("JSON.stringify({images: Array.from(document.images).map(i => [i.naturalWidth, "
            "i.naturalHeight, i.src.slice(0, 30)]), title: document.title, "
            "height: document.documentElement.scrollHeight, "
            "overflow: document.documentElement.scrollWidth > window.innerWidth})")
    res = cdp.call("Runtime.evaluate", expression=expr, returnByValue=True)
    info = json.loads(res["result"]["value"])
    shot = None
    if screenshot:
        shot = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
    errors, requests = [], []
    for e in cdp.events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                   for a in p.get("args", [])))
        elif e["method"] == "Runtime.exceptionThrown":
            errors.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(p["entry"].get("text", ""))
        elif e["method"] == "Network.requestWillBeSent":
            requests.append(p.get("request", {}).get("url", ""))
    return PageCheck(loaded=loaded, images=[tuple(i) for i in info["images"]],
                     console_errors=errors, requests=requests, title=info["title"],
                     page_height=int(info["height"]), overflow_x=bool(info["overflow"]),
                     screenshot=shot)
