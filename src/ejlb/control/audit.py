"""Audit log of the control plane (logger `ejlb.control.audit`): who changed what, and every refused
call, as operators of the deployed control plane expect.

Lines name the caller by token *id* (never the token) and the gRPC peer address. The servicer sets
the peer for the duration of each call (a context variable: grpc runs each call on one thread), so
the service core logs it without knowing about gRPC. Refused calls come from remote peers at any
rate, so their warnings are rate-limited (the next line says how many were left out): a flood of
bad calls cannot fill the disk.
"""
from __future__ import annotations

import contextvars
import logging
import threading
import time

log = logging.getLogger("ejlb.control.audit")

PEER: contextvars.ContextVar[str] = contextvars.ContextVar("ejlb_peer", default="local")
REFUSED_PER_S = 20.0  # sustained refused-call lines per second
REFUSED_BURST = 100


def peer() -> str:
    return PEER.get()


def info(msg: str, *args) -> None:
    log.info(msg + " peer=%s", *args, PEER.get())


class _Bucket:
    """Token bucket; time is passed in."""

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.level, self.t = burst, None
        self.dropped = 0
        self.lock = threading.Lock()

    def take(self, now: float) -> int | None:
        """None when over the rate (counted), else how many were dropped since the last take."""
        with self.lock:
            if self.t is not None:
                self.level = min(self.burst, self.level + (now - self.t) * self.rate)
            self.t = now
            if self.level < 1:
                self.dropped += 1
                return None
            self.level -= 1
            dropped, self.dropped = self.dropped, 0
            return dropped


class Refusals:
    """Warnings for refused calls, at most REFUSED_PER_S a second (bursts of REFUSED_BURST); one per
    control plane."""

    def __init__(self, rate: float = REFUSED_PER_S, burst: float = REFUSED_BURST):
        self._bucket = _Bucket(rate, burst)

    def log(self, method: str, code: str, detail: str, token_id: int | None, now: float | None = None) -> None:
        dropped = self._bucket.take(time.monotonic() if now is None else now)
        if dropped is None:
            return
        who = f"token {token_id}" if token_id is not None else "no valid token"
        more = f" ({dropped} refused calls not logged before this one)" if dropped else ""
        log.warning("refused %s: %s %s by %s peer=%s%s", method, code, detail, who, PEER.get(), more)
