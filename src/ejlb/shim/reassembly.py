"""Reassembly rules of the receiver, as a pure sans-I/O reference (no sockets, threads or clock).

This is the oracle for the native reassembler in csrc/recv.c, which applies the same rules to the
same datagrams (tests/test_receiver_native.py feeds both and compares). It is readable, not fast:
the receiver never runs it on the data path.

Rules, per datagram (UDP payload):
  * optional LB header (back-to-back use, or a worker registered with keep-LB-header), then the RE
    header; a datagram too short for them, or that ejlb.wire.parse_headers finds invalid (the one
    validity rule, also the C core's) -> `bad_headers`;
  * offset + fragment length beyond the event length, an empty fragment of a non-empty event, or a
    length different from the one the event started with -> `bad_fragments`;
  * events are keyed by (event_number, data_id); a fragment whose bytes were all received already,
    or that belongs to an event finished (completed or given up) less than `timeout` ago ->
    `duplicates`; one that partially overlaps received bytes keeps its new bytes -> `overlaps`;
  * an event completes when every byte of its length has arrived, whatever the fragment order;
  * an incomplete event older than `timeout` (since its first fragment) is `lost`; to start an
    event that does not fit `max_pending_bytes` (length + EVENT_OVERHEAD per event) or
    `max_pending_events`, incomplete events are `evicted`: first those that received one fragment
    only, then the others, each least recently progressed (new bytes) first. So a flood of fake
    first fragments claiming big events evicts fakes, not an event that keeps receiving fragments
    however old it is. An event longer than the whole cap is refused -> `bad_fragments`. So memory
    is bounded whatever a peer sends.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields

import numpy as np

from ejlb.shim.events import LOST_EVICTED, LOST_TIMEOUT, LostEvent
from ejlb.shim.rangeset import RangeSet
from ejlb.wire import HEADERS_LEN, RE_HEADER_LEN, parse_headers

EVENT_OVERHEAD = 256  # the C core's EJLB_RX_EVENT_OVERHEAD is generated from this (ejlb.cfacts)


@dataclass
class ReassemblyCounters:
    """Counters of the reassembly rules (the queue-side counters live in the receiver)."""

    events_recv: int = 0
    events_reassembled: int = 0
    bytes_recv: int = 0
    packets_recv: int = 0
    bad_headers: int = 0
    bad_fragments: int = 0
    duplicates: int = 0
    overlaps: int = 0
    lost: int = 0
    evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Pending:
    length: int
    started: float
    buf: bytearray
    received: RangeSet = field(default_factory=RangeSet)
    got: int = 0
    fragments: int = 0


class Reassembler:
    """Feed datagrams with `feed(datagram, now)`, get completed (event_number, data_id, bytes)."""

    def __init__(
        self,
        *,
        with_lb_header: bool = False,
        timeout: float = 0.5,
        max_pending_bytes: int = 1 << 30,
        max_pending_events: int = 16384,
        lost_log_size: int = 1024,
    ):
        self.with_lb_header = with_lb_header
        self.timeout = timeout
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_events = max_pending_events
        self.counters = ReassemblyCounters()
        self.lost_log: deque[LostEvent] = deque(maxlen=lost_log_size)
        self._pending: dict[tuple[int, int], _Pending] = {}  # insertion order = age order
        # eviction order: (one fragment so far, more), each least recently progressed first
        self._order: tuple[dict, dict] = ({}, {})
        self._finished: dict[tuple[int, int], float] = {}
        self._pending_bytes = 0

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def feed(self, datagram: bytes, now: float) -> list[tuple[int, int, bytes]]:
        c = self.counters
        c.packets_recv += 1
        c.bytes_recv += len(datagram)
        d = memoryview(datagram)
        head_len = HEADERS_LEN if self.with_lb_header else RE_HEADER_LEN
        if len(d) < head_len:
            c.bad_headers += 1
            return []
        # the layout is ejlb.wire's dtypes, the validity rule its parse_headers: the same as the C core's
        heads, ok = parse_headers(np.frombuffer(d, np.uint8, head_len)[None, :], self.with_lb_header)
        if not ok[0]:
            c.bad_headers += 1
            return []
        re = heads["re"][0] if self.with_lb_header else heads[0]
        data_id, offset, length = int(re["data_id"]), int(re["offset"]), int(re["length"])
        key = (int(re["event_number"]), data_id)
        frag = d[head_len:]
        if offset + len(frag) > length or (not frag and length):
            c.bad_fragments += 1
            return []
        ev = self._pending.get(key)
        if ev is None:
            if now - self._finished.get(key, -float("inf")) < self.timeout:
                c.duplicates += 1
                return []
            if length == 0:
                c.events_recv += 1
                c.events_reassembled += 1
                self._mark_finished(key, now)
                return [(key[0], key[1], b"")]
            ev = self._start(key, length, now)
            if ev is None:
                c.bad_fragments += 1
                return []
            c.events_recv += 1
        elif ev.length != length:
            c.bad_fragments += 1
            return []
        fresh = ev.received.add(offset, offset + len(frag))
        if fresh == 0:
            c.duplicates += 1
            return []
        if fresh < len(frag):
            c.overlaps += 1
        ev.buf[offset : offset + len(frag)] = frag
        ev.got += fresh
        ev.fragments += 1
        self._order[0].pop(key, None)
        self._order[1].pop(key, None)
        self._order[ev.fragments > 1][key] = None  # progress: last in line for eviction
        if ev.got < ev.length:
            return []
        c.events_reassembled += 1
        self._remove(key, now)
        return [(key[0], key[1], bytes(ev.buf))]

    def expire(self, now: float) -> None:
        """Gives up every incomplete event older than the timeout."""
        for key, ev in list(self._pending.items()):
            if now - ev.started < self.timeout:
                break
            self._give_up(key, LOST_TIMEOUT, now)

    def _start(self, key, length: int, now: float) -> _Pending | None:
        charge = length + EVENT_OVERHEAD
        if charge > self.max_pending_bytes:
            return None
        while self._pending and (
            self._pending_bytes + charge > self.max_pending_bytes or len(self._pending) >= self.max_pending_events
        ):
            self._give_up(next(iter(self._order[0] or self._order[1])), LOST_EVICTED, now)
        ev = self._pending[key] = _Pending(length, now, bytearray(length))
        self._order[0][key] = None
        self._pending_bytes += charge
        return ev

    def _remove(self, key, now: float) -> _Pending:
        ev = self._pending.pop(key)
        self._order[0].pop(key, None)
        self._order[1].pop(key, None)
        self._pending_bytes -= ev.length + EVENT_OVERHEAD
        self._mark_finished(key, now)
        return ev

    def _mark_finished(self, key, now: float) -> None:
        self._finished.pop(key, None)  # re-insert so that dict order stays age order
        self._finished[key] = now
        # forget finished keys once they can no longer suppress anything: bounded by the traffic of
        # one timeout period (the native core uses a fixed-size cache instead)
        while self._finished:
            first = next(iter(self._finished))
            if now - self._finished[first] < self.timeout:
                break
            del self._finished[first]

    def _give_up(self, key, reason: str, now: float) -> None:
        ev = self._remove(key, now)
        if reason == LOST_TIMEOUT:
            self.counters.lost += 1
        else:
            self.counters.evicted += 1
        self.lost_log.append(LostEvent(key[0], key[1], ev.fragments, ev.got, ev.length, reason))
