"""Sync packets, sender -> control plane: a pure schedule and a thin thread that follows it.

Every `period` seconds the sender tells the control plane which tick an event sent now would carry
and how fast ticks advance, so that the control plane can place epoch boundaries in the future.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from ejlb.errors import ArgumentError
from ejlb.wire import MAX_SYNC_PERIOD_S, SyncHeader


class SyncSchedule:
    """Due times start, start + period, start + 2 period, ...: no drift from late wake-ups, and a
    wake-up later than a whole period skips the missed ones instead of sending a burst."""

    __slots__ = ("period", "next")

    def __init__(self, period: float, start: float):
        try:
            period = float(period)
        except (TypeError, ValueError):
            raise ArgumentError("sync_period", period, "must be a number of seconds") from None
        if not 0 < period <= MAX_SYNC_PERIOD_S:
            raise ArgumentError("sync_period", period, f"must be within (0, {MAX_SYNC_PERIOD_S}] s")
        self.period = period
        self.next = start

    def wait(self, now: float) -> float:
        """Seconds until the next packet is due (0 when due now)."""
        return max(0.0, self.next - now)

    def fire(self, now: float) -> bool:
        """True when a packet is due at `now`; then books the next due time."""
        if now < self.next:
            return False
        missed = int((now - self.next) // self.period)
        self.next += (missed + 1) * self.period
        return True


class SyncThread:
    """Sends a Sync packet to `address` whenever the schedule says so, until `stop()`.

    `fields()` returns (event_number, avg_event_rate_hz) at the moment of sending; the wall clock
    goes in unix_time_ns. A refused send is counted, never fatal."""

    def __init__(self, address: tuple, family: int, event_src_id: int, period: float,
                 fields: Callable[[], tuple[int, int]]):
        self._src = SyncHeader(event_src_id, 0, 0, 0).event_src_id  # raises WireError unless u32
        self._schedule = SyncSchedule(period, time.monotonic())
        self._address = address
        self._fields = fields
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._stop = threading.Event()
        self.packets = 0
        self.errors = 0
        self.last_errno = 0
        self._thread = threading.Thread(target=self._run, name="ejlb-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._schedule.wait(time.monotonic())):
            if self._schedule.fire(time.monotonic()):
                self.send_now()

    def send_now(self) -> None:
        event_number, rate = self._fields()
        packet = SyncHeader(self._src, event_number, rate, time.time_ns()).encode()
        try:
            self._sock.sendto(packet, self._address)
            self.packets += 1
        except OSError as e:
            self.errors += 1
            self.last_errno = e.errno or 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
