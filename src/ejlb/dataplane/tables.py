"""The data-plane table model: one definition shared by the control plane, the reference model,
the software LB and the FPGA driver.

Six tables (see docs/dataplane.md):

    lbs        destination filter: LB instance id -> its own MAC / IPv4 / IPv6 and slot parameters
    senders    allow-list: (lb id, source IP) pairs
    epochs     (lb id, epoch id) -> tick range [start, end); one epoch per LB may be the catch-all
    calendars  (lb id, epoch id) -> 512 member ids (UNASSIGNED = drop)
    members    (lb id, member id) -> where to send (MAC, IP, base port, port bits, keep LB header) or drop
    (counters are the sixth: read back, never written; see Counters)

Tables are immutable values. The control plane computes the desired Tables, `diff()`s them against
what a backend has installed and hands the TableDiff to `Backend.apply`, which must make the whole
diff visible at once (no packet may see half of it).
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Union

from ejlb.errors import EjlbError
from ejlb.wire import CALENDAR_SLOTS, SLOT_BITS

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

NUM_LBS = 8
NUM_EPOCHS = 4
MAX_MEMBERS = 1024
UNASSIGNED = 0xFFFF
TICK_MAX = (1 << 64) - 1


class TableError(EjlbError, ValueError):
    """A table entry that no data plane could install; the message names the field and value."""


class Drop(enum.IntEnum):
    """Verdict codes: 0 forwards, every other value names the drop counter. Shared with C and HDL."""

    FORWARD = 0
    PARSE_FAIL = 1
    NOT_LB = 2
    NO_LB_HDR = 3
    BAD_VERSION = 4
    BLOCKED_SRC = 5
    TTL = 6
    EPOCH_MISS = 7
    CALENDAR_MISS = 8
    MEMBER_MISS = 9

    @property
    def counter(self) -> str:
        return "drop_" + self.name.lower()


def _mac(name: str, value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 6:
        raise TableError(f"{name}={value!r}: a MAC address is 6 bytes")
    return bytes(value)


def parse_mac(text: str) -> bytes:
    """'02:00:00:00:00:01' -> 6 bytes."""
    parts = text.split(":")
    try:
        if len(parts) != 6:
            raise ValueError
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise TableError(f"mac={text!r}: expected six hex bytes separated by ':'") from None


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise TableError(f"{name}={value!r}: must be an integer in {lo}..{hi}")


@dataclass(frozen=True)
class LBInstance:
    """Destination-filter entry: packets to `ipv4`/`ipv6` belong to LB `lb_id`."""

    lb_id: int
    mac: bytes
    ipv4: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None
    slot_bits: int = SLOT_BITS
    slot_xor: int = 0

    def __post_init__(self) -> None:
        _check_range("lb_id", self.lb_id, 0, NUM_LBS - 1)
        object.__setattr__(self, "mac", _mac("mac", self.mac))
        if self.ipv4 is not None and not isinstance(self.ipv4, ipaddress.IPv4Address):
            object.__setattr__(self, "ipv4", ipaddress.IPv4Address(self.ipv4))
        if self.ipv6 is not None and not isinstance(self.ipv6, ipaddress.IPv6Address):
            object.__setattr__(self, "ipv6", ipaddress.IPv6Address(self.ipv6))
        _check_range("slot_bits", self.slot_bits, 0, 16)
        _check_range("slot_xor", self.slot_xor, 0, 0xFFFF)


@dataclass(frozen=True)
class EpochRange:
    """Ticks in [start, end) use this epoch; end None = no upper bound. The catch-all epoch of an
    LB also takes every tick that no range of that LB covers (e.g. older than the oldest boundary)."""

    start: int
    end: int | None = None
    catch_all: bool = False

    def __post_init__(self) -> None:
        _check_range("epoch.start", self.start, 0, TICK_MAX)
        if self.end is not None:
            _check_range("epoch.end", self.end, self.start, TICK_MAX)

    def contains(self, tick: int) -> bool:
        return self.start <= tick and (self.end is None or tick < self.end)


@dataclass(frozen=True)
class Member:
    """Member-info entry. `drop` = explicit drop rule for a removed worker still in a live epoch."""

    ip: IPAddress
    base_port: int
    port_bits: int = 0
    mac: bytes = b"\x00" * 6
    keep_lb_header: bool = False
    drop: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            object.__setattr__(self, "ip", ipaddress.ip_address(self.ip))
        _check_range("base_port", self.base_port, 0, 0xFFFF)
        _check_range("port_bits", self.port_bits, 0, 14)
        if self.base_port + (1 << self.port_bits) - 1 > 0xFFFF:
            raise TableError(
                f"port_bits={self.port_bits}: base_port {self.base_port} + 2^bits - 1 exceeds 65535"
            )
        object.__setattr__(self, "mac", _mac("member.mac", self.mac))


@dataclass(frozen=True)
class Tables:
    lbs: Mapping[int, LBInstance] = field(default_factory=dict)
    senders: frozenset[tuple[int, IPAddress]] = frozenset()
    epochs: Mapping[tuple[int, int], EpochRange] = field(default_factory=dict)
    calendars: Mapping[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)
    members: Mapping[tuple[int, int], Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for lb_id, inst in self.lbs.items():
            if lb_id != inst.lb_id:
                raise TableError(f"lbs[{lb_id}].lb_id={inst.lb_id}: key and entry disagree")
        for lb_id, ip in self.senders:
            _check_range("sender.lb_id", lb_id, 0, NUM_LBS - 1)
            if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                raise TableError(f"sender ip={ip!r}: must be an ipaddress object")
        catch_alls: dict[int, int] = {}
        for (lb_id, epoch), rng in self.epochs.items():
            _check_range("epoch.lb_id", lb_id, 0, NUM_LBS - 1)
            _check_range("epoch_id", epoch, 0, NUM_EPOCHS - 1)
            if rng.catch_all and catch_alls.setdefault(lb_id, epoch) != epoch:
                raise TableError(f"lb {lb_id}: epochs {catch_alls[lb_id]} and {epoch} both catch-all")
        for (lb_id, epoch), cal in self.calendars.items():
            _check_range("calendar.lb_id", lb_id, 0, NUM_LBS - 1)
            _check_range("calendar.epoch_id", epoch, 0, NUM_EPOCHS - 1)
            if len(cal) != CALENDAR_SLOTS:
                raise TableError(f"calendar ({lb_id},{epoch}) length={len(cal)}: must be {CALENDAR_SLOTS}")
            if min(cal) < 0 or max(cal) > UNASSIGNED:  # C-speed scan; the loop only names the culprit
                for m in cal:
                    if not 0 <= m <= UNASSIGNED:
                        raise TableError(f"calendar ({lb_id},{epoch}) member={m}: must be 0..65535")
        for lb_id, member_id in self.members:
            if type(lb_id) is int and type(member_id) is int and 0 <= lb_id < NUM_LBS and 0 <= member_id < MAX_MEMBERS:
                continue  # fast path for the thousands of members a controller tick plans
            _check_range("member.lb_id", lb_id, 0, NUM_LBS - 1)
            _check_range("member_id", member_id, 0, MAX_MEMBERS - 1)

    def lb_for_destination(self, ip: IPAddress) -> LBInstance | None:
        """Destination filter lookup."""
        for inst in self.lbs.values():
            if ip == inst.ipv4 or ip == inst.ipv6:
                return inst
        return None

    def epoch_for(self, lb_id: int, tick: int) -> int | None:
        """Epoch lookup: the range holding `tick`, else the LB's catch-all, else None (miss)."""
        fallback = None
        for epoch in range(NUM_EPOCHS):
            rng = self.epochs.get((lb_id, epoch))
            if rng is None:
                continue
            if rng.contains(tick):
                return epoch
            if rng.catch_all:
                fallback = epoch
        return fallback


_TABLE_NAMES = ("lbs", "epochs", "calendars", "members")


@dataclass(frozen=True)
class TableDiff:
    """What changes between two Tables: per keyed table the entries to set and the keys to delete;
    for the allow-list the pairs to add and remove."""

    set: Mapping[str, Mapping] = field(default_factory=dict)
    delete: Mapping[str, frozenset] = field(default_factory=dict)
    senders_add: frozenset = frozenset()
    senders_remove: frozenset = frozenset()

    def __bool__(self) -> bool:
        return bool(
            any(self.set.values()) or any(self.delete.values()) or self.senders_add or self.senders_remove
        )


def diff(old: Tables, new: Tables) -> TableDiff:
    sets, deletes = {}, {}
    for name in _TABLE_NAMES:
        a, b = getattr(old, name), getattr(new, name)
        sets[name] = {k: v for k, v in b.items() if (o := a.get(k)) is not v and o != v}  # identity: fast path
        deletes[name] = frozenset(k for k in a if k not in b)
    return TableDiff(
        set=sets,
        delete=deletes,
        senders_add=frozenset(new.senders - old.senders),
        senders_remove=frozenset(old.senders - new.senders),
    )


def apply(tables: Tables, d: TableDiff) -> Tables:
    """The Tables that result from installing `d` on `tables` (pure)."""
    parts = {}
    for name in _TABLE_NAMES:
        cur = dict(getattr(tables, name))
        for k in d.delete.get(name, ()):
            cur.pop(k, None)
        cur.update(d.set.get(name, {}))
        parts[name] = cur
    senders = (tables.senders - d.senders_remove) | d.senders_add
    return Tables(senders=frozenset(senders), **parts)


# Counter names. Per LB: rx and every drop after the LB is known; global: drops before that.
GLOBAL_COUNTERS = ("drop_parse_fail", "drop_not_lb")
LB_RX_COUNTERS = ("rx_packets", "rx_bytes", "rx_v2", "rx_v3")
LB_COUNTERS = LB_RX_COUNTERS + tuple(
    d.counter for d in Drop if d > Drop.NOT_LB
)
MEMBER_COUNTERS = ("tx_packets", "tx_bytes")


@dataclass
class Counters:
    """64-bit counters read back from a data plane."""

    glob: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GLOBAL_COUNTERS, 0))
    lb: dict[int, dict[str, int]] = field(default_factory=dict)
    member: dict[tuple[int, int], dict[str, int]] = field(default_factory=dict)

    def lb_counters(self, lb_id: int) -> dict[str, int]:
        return self.lb.setdefault(lb_id, dict.fromkeys(LB_COUNTERS, 0))

    def member_counters(self, lb_id: int, member_id: int) -> dict[str, int]:
        return self.member.setdefault((lb_id, member_id), dict.fromkeys(MEMBER_COUNTERS, 0))


@dataclass(frozen=True)
class SenderLimit:
    """How many allow-list entries (IPv4 and IPv6 alike) a data plane holds: per LB instance and over
    all instances together; None is no limit. Each backend declares its own (`sender_limit`), the
    control plane refuses sender lists beyond it (ejlb.control.validate.sender_count)."""

    per_lb: int | None = None
    total: int | None = None


class Backend(Protocol):
    """A data plane the control plane programs. `apply` installs a diff atomically."""

    installed: Tables
    sender_limit: SenderLimit

    def apply(self, d: TableDiff) -> None: ...

    def counters(self) -> Counters: ...

    def close(self) -> None: ...


class MemoryBackend:
    """Holds installed tables and nothing else: the base of in-process backends."""

    sender_limit = SenderLimit()  # a Python set: no limit of its own

    def __init__(self) -> None:
        self.installed = Tables()
        self._counters = Counters()

    def apply(self, d: TableDiff) -> None:
        self.installed = apply(self.installed, d)

    def counters(self) -> Counters:
        return self._counters

    def close(self) -> None:
        pass
