"""Helpers of the sender tests: loopback sockets that capture raw datagrams, and a checker that
decodes them with ejlb.wire and proves they carry exactly the events that were sent."""
from __future__ import annotations

import random
import select
import socket
from collections import defaultdict
from dataclasses import dataclass

from ejlb.sockopt import SO_RCVBUFFORCE
from ejlb.wire import HEADERS_LEN, LB_HEADER_LEN, LBHeader, REHeader


class Capture:
    """UDP sockets bound to `nports` consecutive ports of `host`; `take()` reads what arrived."""

    def __init__(self, host: str = "127.0.0.1", nports: int = 1, rcvbuf: int = 64 << 20):
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        for _ in range(50):
            base = random.randint(20000, 60000 - nports)
            socks = []
            try:
                for p in range(base, base + nports):
                    s = socket.socket(self.family, socket.SOCK_DGRAM)
                    socks.append(s)
                    try:
                        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)  # past rmem_max (root)
                    except PermissionError:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    s.bind((host, p))
                break
            except OSError:
                for s in socks:
                    s.close()
        else:
            raise RuntimeError("no free port range")
        self.socks = socks
        self.port = base
        self.max_port = base + nports - 1

    def uri(self, **query) -> str:
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        ports = f"{self.port}" if self.max_port == self.port else f"{self.port}-{self.max_port}"
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"ejfat://lb.example:18347/lb/1?data={host}:{ports}{extra}"

    def take(self, expect: int | None = None, timeout: float = 1.0) -> list["Datagram"]:
        """Datagrams received until `expect` have arrived or none came for `timeout` seconds."""
        out: list[Datagram] = []
        while expect is None or len(out) < expect:
            ready, _, _ = select.select(self.socks, [], [], timeout)
            if not ready:
                break
            for s in ready:
                try:
                    while True:
                        data, src = s.recvfrom(70000, socket.MSG_DONTWAIT)
                        out.append(Datagram(data, src[1], s.getsockname()[1]))
                except BlockingIOError:
                    pass
        return out

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class Datagram:
    data: bytes
    sport: int
    dport: int

    @property
    def lb(self) -> LBHeader:
        return LBHeader.decode(self.data[:LB_HEADER_LEN])

    @property
    def re(self) -> REHeader:
        return REHeader.decode(self.data[LB_HEADER_LEN:HEADERS_LEN])

    @property
    def fragment(self) -> bytes:
        return self.data[HEADERS_LEN:]


def events_of(dgrams: list[Datagram], *, fragment: int, version: int = 2) -> dict[int, bytes]:
    """Reassemble by RE event number, asserting the spec on the way: one tick and one entropy
    (and source/destination port) per event, offsets at multiples of `fragment` covering the
    event exactly once, v3 slot_select = tick & 0xFFFF, v2 slot_select 0."""
    by_event: dict[int, list[Datagram]] = defaultdict(list)
    for d in dgrams:
        by_event[d.re.event_number].append(d)
    events = {}
    for evn, ds in by_event.items():
        lbs = {(d.lb.tick, d.lb.entropy, d.lb.slot_select, d.lb.version) for d in ds}
        assert len(lbs) == 1, f"event {evn}: fragments disagree on LB fields {lbs}"
        tick, _, slot, ver = lbs.pop()
        assert ver == version
        assert slot == (tick & 0xFFFF if version == 3 else 0)
        assert len({(d.sport, d.dport) for d in ds}) == 1, f"event {evn} spread over ports"
        lengths = {d.re.length for d in ds}
        assert len(lengths) == 1, f"event {evn}: RE lengths {lengths}"
        length = lengths.pop()
        ds.sort(key=lambda d: d.re.offset)
        expect_offsets = list(range(0, max(length, 1), fragment))
        assert [d.re.offset for d in ds] == expect_offsets, f"event {evn}: offsets"
        body = b"".join(d.fragment for d in ds)
        assert len(body) == length
        for d in ds[:-1]:
            assert len(d.fragment) == fragment
        events[evn] = body
    return events
