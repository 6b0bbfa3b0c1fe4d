"""Sans-I/O planning of the sender: datagram layout, event numbering and socket/port rotation.

Nothing here touches a socket or a clock; the shell (`ejlb.shim.sender`) passes the time in. The
native core (csrc/send.c) lays the datagrams out exactly as `Layout` says, so tests can predict
every byte from these classes and `ejlb.wire`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ejlb.errors import ArgumentError
from ejlb.sockopt import UDP_MAX_SEGMENTS
from ejlb.wire import (
    HEADERS_LEN,
    IPV4_HEADER_LEN,
    LB_VERSIONS,
    MAX_EVENT_LEN,
    TICK_RATE_HZ,
    UDP_HEADER_LEN,
    WireError,
    max_payload,
)

MAX_GSO_SEGMENTS = UDP_MAX_SEGMENTS  # ejlb.sockopt: 64 works on every kernel
_MAX_IP_LEN = 0xFFFF
_U64 = (1 << 64) - 1


def check_uint(field: str, value, bits: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise WireError(field, value, f"must be an integer (u{bits})")
    value = value.__index__()
    if not 0 <= value < (1 << bits):
        raise WireError(field, value, f"out of range for u{bits}")
    return value


@dataclass(frozen=True)
class Layout:
    """How events become datagrams at one MTU and IP family.

    fragment: event bytes per datagram (MTU - IP - UDP - LB - RE).
    segment: UDP payload of a full datagram (fragment + 36 header bytes); the GSO segment size.
    gso_segments: datagrams per GSO super-datagram (all `segment` long but the last), bounded by
        the kernel's segment limit and the 64 KiB IP length limit."""

    mtu: int
    ipv6: bool
    fragment: int
    segment: int
    gso_segments: int

    @classmethod
    def for_mtu(cls, mtu: int, ipv6: bool = False) -> "Layout":
        fragment = max_payload(mtu, ipv6)  # raises ArgumentError('mtu', ...) outside (overhead, 9000]
        segment = fragment + HEADERS_LEN
        # IPv4 counts its own header in the 16-bit total length, IPv6 does not.
        room = _MAX_IP_LEN - UDP_HEADER_LEN - (0 if ipv6 else IPV4_HEADER_LEN)
        return cls(int(mtu), ipv6, fragment, segment, max(1, min(MAX_GSO_SEGMENTS, room // segment)))

    def datagrams(self, event_len: int) -> int:
        """Datagrams of one event; a zero-length event is one header-only datagram."""
        return max(1, -(-event_len // self.fragment))

    def udp_bytes(self, event_len: int) -> int:
        """UDP payload bytes of one event (what pacing and `SenderStats.bytes` count)."""
        return event_len + HEADERS_LEN * self.datagrams(event_len)


def check_event_len(nbytes: int) -> int:
    if nbytes > MAX_EVENT_LEN:
        raise WireError("event.length", nbytes, f"an event is at most {MAX_EVENT_LEN} bytes (32-bit RE length)")
    return nbytes


def check_lb_version(version) -> int:
    if version not in LB_VERSIONS:
        raise WireError("lb_version", version, "must be 2 or 3")
    return int(version)


class Numbering:
    """Tick, RE event number and entropy of each event, as the spec wants them.

    - tick: microseconds since the Unix epoch at send time, strictly increasing (two events in the
      same microsecond get consecutive ticks, so a tick always names one event); or caller-supplied.
    - event number: auto-increments; a caller-supplied number also moves the counter, so the next
      automatic one is that number + 1.
    - entropy: 16 random bits per event unless supplied.
    - v3 slot_select = tick & 0xFFFF (the slot the v2 LB would derive from the tick).
    """

    __slots__ = ("next_event", "last_tick", "auto_ticks", "events", "_bits")

    def __init__(self, first_event: int = 0, rng: random.Random | None = None):
        self.next_event = check_uint("event_number", first_event, 64)
        self.last_tick = -1
        self.auto_ticks = True  # False once the caller supplies ticks (changes what sync reports)
        self.events = 0
        self._bits = (rng or random.Random()).getrandbits

    @staticmethod
    def validate(event_number=None, entropy=None, tick=None) -> None:
        """Raise WireError for a caller-supplied value `stamp` would refuse, changing nothing."""
        if event_number is not None:
            check_uint("event_number", event_number, 64)
        if entropy is not None:
            check_uint("entropy", entropy, 16)
        if tick is not None:
            check_uint("tick", tick, 64)

    def stamp(self, now_us: int, event_number=None, entropy=None, tick=None) -> tuple[int, int, int, int]:
        """(tick, event_number, entropy, slot_select) of the next event."""
        if tick is None:
            tick = now_us if now_us > self.last_tick else (self.last_tick + 1) & _U64
            self.auto_ticks = True
        else:
            tick = check_uint("tick", tick, 64)
            self.auto_ticks = False
        if event_number is None:
            event_number = self.next_event
        else:
            event_number = check_uint("event_number", event_number, 64)
        entropy = self._bits(16) if entropy is None else check_uint("entropy", entropy, 16)
        self.last_tick = tick
        self.next_event = (event_number + 1) & _U64
        self.events += 1
        return tick, event_number, entropy, tick & 0xFFFF


class Rotation:
    """Which socket (source port) and destination port each event uses: events rotate over the
    sockets, and over the URI's data port range, one step per event."""

    __slots__ = ("nsockets", "min_port", "span", "_n")

    def __init__(self, nsockets: int, min_port: int, max_port: int):
        if isinstance(nsockets, bool) or not isinstance(nsockets, int) or not 1 <= nsockets <= 64:
            raise ArgumentError("sockets", nsockets, "must be an integer in 1..64")
        if not 0 < min_port <= max_port <= 0xFFFF:
            raise ArgumentError("data.port", (min_port, max_port), "needs 0 < min <= max <= 65535")
        self.nsockets = nsockets
        self.min_port = min_port
        self.span = max_port - min_port + 1
        self._n = 0

    def next(self) -> tuple[int, int]:
        n = self._n
        self._n = n + 1
        return n % self.nsockets, self.min_port + n % self.span


class SyncState:
    """What a Sync packet says now: the tick an event would carry and the rate ticks advance.

    With automatic ticks (µs timestamps) that is `now_us` and 1 000 000 Hz, as deployed senders
    report. With caller-supplied ticks the sender cannot know the caller's clock, so it reports
    the last tick used and the event rate measured over the last sync period."""

    __slots__ = ("_events", "_t")

    def __init__(self):
        self._events = 0
        self._t: float | None = None

    def fields(self, numbering: Numbering, now_us: int, now_s: float) -> tuple[int, int]:
        """(event_number, avg_event_rate_hz) for a Sync packet sent at this moment."""
        events, t0 = self._events, self._t
        self._events, self._t = numbering.events, now_s
        if numbering.auto_ticks:
            return max(now_us, numbering.last_tick), TICK_RATE_HZ
        rate = 0 if t0 is None or now_s <= t0 else round((numbering.events - events) / (now_s - t0))
        return max(numbering.last_tick, 0), min(rate, 0xFFFFFFFF)
