"""Browser sessions and CSRF checks of the web dashboard: pure (time is passed in, no HTTP).

Choices:
- The cookie holds a random session id, never the token: the token stays on the server (memory
  only), so a logout or an expiry makes the cookie worthless, and the token is sent once, in the
  body of the login request (never a URL, never a log line).
- Each session has its own CSRF secret, handed to the page by `GET /api/v1/session` (same-origin
  only: no CORS) and required in the `X-CSRF-Token` header of every state-changing request that a
  cookie authenticates. Requests carrying `Authorization: Bearer` are scripts: a browser never adds
  that header by itself, so they need no CSRF secret.
- Every state-changing request (login included) must also send `Content-Type: application/json`
  (an HTML form cannot, and a cross-site fetch with it needs a CORS preflight we never grant) and,
  when the browser sends `Origin`, that origin must be the server's own.
- Bounded: at most MAX_SESSIONS sessions (the oldest is dropped first), each expiring after
  SESSION_TTL_S of inactivity.
"""
from __future__ import annotations

import collections
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "ejlb_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 8 * 3600.0
MAX_SESSIONS = 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class WebSession:
    token: str  # the bearer token this browser logged in with
    csrf: str
    last_used: float


class Sessions:
    """Session id -> WebSession, bounded and expiring; time is passed in."""

    def __init__(self, ttl: float = SESSION_TTL_S, limit: int = MAX_SESSIONS):
        self.ttl, self.limit = ttl, limit
        self._by_id: collections.OrderedDict[str, WebSession] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, token: str, now: float) -> tuple[str, WebSession]:
        while len(self._by_id) >= self.limit:
            self._by_id.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        s = self._by_id[sid] = WebSession(token, secrets.token_urlsafe(32), now)
        return sid, s

    def get(self, sid: str | None, now: float) -> WebSession | None:
        s = self._by_id.get(sid) if sid else None
        if s is None:
            return None
        if now - s.last_used > self.ttl:
            del self._by_id[sid]
            return None
        s.last_used = now
        self._by_id.move_to_end(sid)
        return s

    def drop(self, sid: str | None) -> None:
        self._by_id.pop(sid, None)


def csrf_refusal(method: str, headers, session: WebSession | None, own_origins: set[str]) -> str | None:
    """Why a request must be refused as a possible cross-site request forgery, or None.
    `session` is the cookie's session when the cookie (not a bearer header) authenticates."""
    if method in SAFE_METHODS:
        return None
    origin = headers.get("Origin")
    if origin is not None and origin not in own_origins:
        return f"Origin={origin!r}: not this server's origin"
    ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return f"Content-Type={ctype!r}: state-changing requests must send application/json"
    if session is not None:
        sent = headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, session.csrf):
            return f"{CSRF_HEADER}: missing or wrong (read it from GET /api/v1/session)"
    return None
