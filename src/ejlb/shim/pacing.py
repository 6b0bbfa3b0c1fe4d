"""Pacing of the sender: a token bucket on bytes, fed by whatever clock the caller passes in.

Kept as a virtual schedule (GCRA): `next` is when the link would be free if every byte so far had
gone out at exactly the target rate; each send is booked at `next`. Because the schedule is
absolute, a sleep that overshoots is paid back by the following sends instead of lowering the
average, and the shell may skip a wait shorter than its sleep granularity (it is early by that
much, and a later wait is longer by as much). Idle time banks at most one burst of credit, so the
average holds from the first event on.
"""
from __future__ import annotations

from ejlb.errors import ArgumentError

MIN_GBPS = 0.001
MAX_GBPS = 400.0
DEFAULT_BURST_S = 0.002  # burst credit in seconds of traffic: covers sleep jitter of the OS


class TokenBucket:
    """`reserve(nbytes, now) -> seconds to wait` before sending nbytes, then `started(now)` once
    the send begins; pure arithmetic on the times passed in."""

    __slots__ = ("rate", "burst_s", "next", "_due", "_late")

    def __init__(self, rate_gbps: float, burst_s: float = DEFAULT_BURST_S):
        try:
            gbps = float(rate_gbps)
        except (TypeError, ValueError):
            raise ArgumentError("rate_gbps", rate_gbps, "must be a number of Gb/s") from None
        if not MIN_GBPS <= gbps <= MAX_GBPS:
            raise ArgumentError("rate_gbps", rate_gbps, f"must be within {MIN_GBPS}..{MAX_GBPS}")
        if not 0 <= burst_s <= 1:
            raise ArgumentError("burst_s", burst_s, "must be within 0..1 s")
        self.rate = gbps * 1e9 / 8  # bytes per second
        self.burst_s = burst_s
        self.next: float | None = None
        self._due: float | None = None  # start time of a send that had to wait
        self._late = 0.0

    def reserve(self, nbytes: int, now: float) -> float:
        """Book nbytes on the schedule; return how long to wait before sending them (>= 0)."""
        nxt = self.next
        if nxt is None:
            nxt = now
        else:
            # Credit for time behind schedule: one burst (idle caller), plus how late the latest
            # sleep woke up (a slow wake-up is ours to make up; a caller slower than the rate is
            # not, so credit never accumulates across events).
            floor = now - self.burst_s - self._late
            if nxt < floor:
                nxt = floor
        self.next = nxt + nbytes / self.rate
        wait = nxt - now
        if wait > 0:
            self._due = nxt
            return wait
        self._due = None
        return 0.0

    def started(self, now: float) -> None:
        """The send booked last began at `now` (only matters after a wait: how late it woke)."""
        if self._due is not None:
            self._late = max(0.0, now - self._due)
            self._due = None
