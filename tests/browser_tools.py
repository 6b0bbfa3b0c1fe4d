"""Headless chromium driven through the DevTools protocol (one websocket, JSON messages).

    with Chromium.launch(tmp_path) as browser:
        page = browser.page
        page.goto(url); page.wait_for("document.querySelector('h1')"); page.screenshot(path)

`Chromium.find()` names the binary or None; the tests skip naming the missing capability then.
Exceptions thrown in the page and console errors (a CSP violation is one) are collected in
`page.errors`, so a test can assert there were none.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
WAIT_S = 30.0  # a failure bound only: waiting for the page, never a timing assertion


class Page:
    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self._conn = connect(ws_url, max_size=None, open_timeout=WAIT_S)
        self.ws = self._conn.__enter__()
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params):
        mid = next(self._ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=WAIT_S))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error" and params["entry"].get("source") != "network":
            # network entries are HTTP statuses the page handles (401 before login, a 403 it shows)
            self.errors.append(params["entry"]["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))

    def eval(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait_for(self, expression: str, what: str | None = None):
        """Poll until the expression is truthy in JavaScript (an element counts); its value."""
        deadline = time.monotonic() + WAIT_S
        while True:
            value = self.eval(expression)
            if value not in (None, False, 0, ""):  # an element comes back as {}
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"page never showed {what or expression}; errors: {self.errors}")
            time.sleep(0.2)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", "a loaded document")

    def fill(self, selector: str, value: str) -> None:
        self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.value = {json.dumps(value)};"
                  " e.dispatchEvent(new Event('input', {bubbles: true})); })()")

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def screenshot(self, path: Path, width: int = 1360) -> None:
        """The whole page at `width` CSS pixels."""
        height = self.eval("Math.ceil(document.documentElement.scrollHeight)")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        self._conn.__exit__(None, None, None)


class Chromium:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port
        self.page = self.new_page()

    @staticmethod
    def find() -> str | None:
        return next((p for p in map(shutil.which, BINARIES) if p), None)

    @classmethod
    def launch(cls, profile: Path) -> "Chromium":
        binary = cls.find()
        if binary is None:
            raise FileNotFoundError("no chromium binary")
        port_file = profile / "DevToolsActivePort"
        # --no-sandbox: the tests run as root in containers, where chromium's sandbox cannot start
        proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                                 "--remote-debugging-port=0", "--remote-allow-origins=*",
                                 f"--user-data-dir={profile}", "--window-size=1360,900", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "LANG": "en_GB.UTF-8", "TZ": "UTC"})
        deadline = time.monotonic() + WAIT_S
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"chromium did not open its DevTools port (exit {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        return cls(proc, port)

    def new_page(self) -> Page:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=WAIT_S) as r:
            targets = [t for t in json.load(r) if t["type"] == "page"]
        return Page(targets[0]["webSocketDebuggerUrl"])

    def close(self) -> None:
        try:
            self.page.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
