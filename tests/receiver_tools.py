"""Helpers of the receiver tests: a datagram crafter built on ejlb.wire (for fragment-level
injection: reorder, duplicate, drop, overlap, garbage) and a direct drive of the native reassembler."""
from __future__ import annotations

import socket

import numpy as np

from ejlb.native import ffi, lib
from ejlb.wire import LB_HEADER_LEN, REHeader, fragment_headers


def datagrams(payload: bytes, *, event_number: int, data_id: int = 0, fragment: int = 1436,
              with_lb: bool = True, entropy: int = 0, tick: int | None = None) -> list[bytes]:
    """Every datagram of one event, in order, as the sender would lay them out."""
    heads = fragment_headers(len(payload), fragment, tick=event_number if tick is None else tick,
                             entropy=entropy, data_id=data_id, event_number=event_number)
    rows = heads.view(np.uint8).reshape(len(heads), -1)
    out = []
    for k, row in enumerate(rows):
        head = row.tobytes() if with_lb else row[LB_HEADER_LEN:].tobytes()
        out.append(head + payload[k * fragment:(k + 1) * fragment])
    return out


def piece(payload: bytes, start: int, end: int, *, event_number: int, data_id: int = 0,
          with_lb: bool = True, length: int | None = None) -> bytes:
    """One datagram carrying payload[start:end] (any range: for overlaps and odd cuts)."""
    re = REHeader(data_id=data_id, offset=start, length=len(payload) if length is None else length,
                  event_number=event_number).encode()
    lb = datagrams(b"", event_number=event_number, data_id=data_id)[0][:LB_HEADER_LEN] if with_lb else b""
    return lb + re + payload[start:end]


def send_all(dgrams, addr, family=socket.AF_INET) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for d in dgrams:
            s.sendto(d, addr)


class NativeReassembler:
    """The native reassembler of csrc/recv.c fed directly (no socket, no thread, explicit clock)."""

    def __init__(self, *, with_lb_header=False, timeout_us=500_000, max_pending_bytes=1 << 30,
                 max_pending_events=16384, queue_size=1 << 16, lost_log_size=1024):
        err = ffi.new("char[256]")
        fds = ffi.new("int[]", [-1])  # never started, so never read
        opt = ffi.new("ejlb_rx_options *", dict(
            threads=1, with_lb_header=with_lb_header, timeout_us=timeout_us, max_pending_bytes=max_pending_bytes,
            max_pending_events=max_pending_events, queue_size=queue_size, lost_log_size=lost_log_size))
        h = lib.ejlb_rx_new(fds, 1, opt, err, 256)
        assert h != ffi.NULL, ffi.string(err)
        self.h = ffi.gc(h, lib.ejlb_rx_free)

    def feed(self, datagram: bytes, now: int, seg: int = 0) -> list[tuple[int, int, bytes]]:
        lib.ejlb_rx_feed(self.h, datagram, len(datagram), seg, now)
        return self.drain()

    def expire(self, now: int) -> None:
        lib.ejlb_rx_expire(self.h, now)

    def drain(self) -> list[tuple[int, int, bytes]]:
        out, ev = [], ffi.new("ejlb_rx_event *")
        while lib.ejlb_rx_next(self.h, 0, ev) == lib.EJLB_RX_OK:
            data = ffi.buffer(ev.data, ev.length)[:] if ev.length else b""
            lib.ejlb_buf_release(ev.data)
            out.append((ev.event_number, ev.data_id, data))
        return out

    def counters(self) -> dict[str, int]:
        s = ffi.new("ejlb_rx_stats *")
        lib.ejlb_rx_get_stats(self.h, s)
        own = {name: getattr(s, name) for name in dir(s) if name != "totals"}
        return {**{name: getattr(s.totals, name) for name in dir(s.totals)}, **own}

    def lost(self) -> list[tuple]:
        buf, nxt = ffi.new("ejlb_rx_lost_event[]", 4096), ffi.new("uint64_t *")
        n = lib.ejlb_rx_lost(self.h, 0, buf, 4096, nxt)
        return [(e.event_number, e.data_id, e.fragments, e.bytes, e.length, e.reason) for e in buf[0:n]]
