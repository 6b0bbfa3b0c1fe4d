"""Helpers for the web tests: a ControlPlane with its WebServer, and a small HTTP client that keeps
the session cookie and can send exactly the headers a test needs (two Authorization headers, a
foreign Origin)."""
from __future__ import annotations

import contextlib
import http.client
import json
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from control_tools import config, control_plane
from ejlb.web.app import WebServer


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def json(self):
        return json.loads(self.text)

    @property
    def message(self) -> str:
        return self.json.get("message", "")


class Http:
    """One browser or script: `token` sends Authorization: Bearer; `login()` keeps the cookie and
    the CSRF secret and sends them as the page does."""

    def __init__(self, base: str, token: str | None = None, ca: str | None = None):
        u = urlsplit(base)
        self.base, self.scheme, self.host, self.port = base, u.scheme, u.hostname, u.port
        self.token = token
        self.cookie: str | None = None
        self.csrf: str | None = None
        self.ctx = ssl.create_default_context(cafile=ca) if u.scheme == "https" else None

    def request(self, method: str, path: str, body=None, headers: list[tuple[str, str]] | None = None,
                raw: bytes | None = None, csrf: bool = True) -> Reply:
        conn = (http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10) if self.ctx
                else http.client.HTTPConnection(self.host, self.port, timeout=10))
        try:
            conn.putrequest(method, path)
            hdrs = list(headers or [])
            names = {k.lower() for k, _ in hdrs}
            if self.token is not None and "authorization" not in names:
                hdrs.append(("Authorization", f"Bearer {self.token}"))
            if self.cookie:
                hdrs.append(("Cookie", self.cookie))
            if csrf and self.csrf and method not in ("GET", "HEAD"):
                hdrs.append(("X-CSRF-Token", self.csrf))
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
            if (body is not None or method in ("POST", "PUT", "DELETE")) and "content-type" not in names:
                hdrs.append(("Content-Type", "application/json"))
            hdrs.append(("Content-Length", str(len(data))))
            for k, v in hdrs:
                conn.putheader(k, v)
            conn.endheaders(data)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read().decode())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, {} if body is None else body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def login(self, token: str) -> Reply:
        r = self.post("/api/v1/login", {"token": token})
        if r.status == 200:
            self.cookie = r.headers["Set-Cookie"].split(";")[0]
            self.csrf = r.json["csrf"]
        return r


@contextlib.contextmanager
def web_plane(cfg=None, **web_kw):
    with control_plane(cfg or config(n_instances=2)) as cp:
        web = WebServer(cp, **web_kw).start()
        try:
            yield cp, web
        finally:
            web.stop()
