"""EJFAT wire formats: LB, RE and Sync headers and the protocol's constants.

Pure (no I/O) and the single source of truth for every header layout: the C core gets its offsets
from csrc/ejlb_wire.h, which `python -m ejlb.wire` generates from the dtypes below (a test keeps it
current), and the HDL register-map generator reads the constants from here.

All fields are big-endian. Datagram payload sender -> LB: LB(16) | RE(20) | fragment.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ejlb.errors import ArgumentError, FieldError

# Validity, one rule for every reader (LBHeader/REHeader.decode, parse_headers, the C core's
# ejlb_lb_ok/ejlb_re_ok in csrc/wire.h, the reassembler, the reference model): LB magic "LB",
# version 2 or 3, next protocol 1; RE byte 0 = 0x10 and byte 1 = 0 (docs/wire.md says receivers
# drop anything else). The v2 reserved field (bytes 4-5) is written as 0 and *ignored* on receipt:
# the protocol names no check for it, the deployed FPGA and receivers never look at it (a v2 LB
# takes the slot from the tick), so rejecting it here alone would drop datagrams that every other
# EJFAT component delivers.

# --- constants of the protocol ---------------------------------------------------------------
LB_MAGIC = b"LB"
LB_VERSIONS = (2, 3)
LB_NEXT_PROTO_RE = 1
RE_VERSION = 1
SYNC_MAGIC = b"LC"
SYNC_VERSION = 2

LB_HEADER_LEN = 16
RE_HEADER_LEN = 20
SYNC_HEADER_LEN = 28
HEADERS_LEN = LB_HEADER_LEN + RE_HEADER_LEN

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
UDP_HEADER_LEN = 8
MAX_MTU = 9000
DEFAULT_MTU = 1500

DEFAULT_DATA_PORT = 19522  # 0x4C42, "LB"
DATA_PORT_MIN = 16384  # the FPGA parses dport & 0xC000 == 0x4000 as EJFAT
DATA_PORT_MAX = 32767
MAX_PORT_RANGE = 14  # entropy bits a worker may listen on
CALENDAR_SLOTS = 512
SLOT_BITS = 9
MAX_EVENT_LEN = (1 << 32) - 1
TICK_RATE_HZ = 1_000_000  # ticks are microseconds since the Unix epoch by default
DEFAULT_SYNC_PERIOD_S = 1.0
MAX_SYNC_PERIOD_S = 10.0

# --- layouts ----------------------------------------------------------------------------------
# numpy dtypes are the layout definition: packed, big-endian. Field order = wire order.
LB_DTYPE = np.dtype(
    [
        ("magic", "S2"),
        ("version", "u1"),
        ("next_proto", "u1"),
        ("slot_select", ">u2"),  # v2: reserved (sent as 0, ignored on receipt); v3: slot select
        ("port_select", ">u2"),  # v2: entropy; v3: port select
        ("tick", ">u8"),
    ]
)
RE_DTYPE = np.dtype(
    [
        ("version", "u1"),  # version in the high nibble: 0x10
        ("reserved", "u1"),
        ("data_id", ">u2"),
        ("offset", ">u4"),
        ("length", ">u4"),  # total event length
        ("event_number", ">u8"),
    ]
)
SYNC_DTYPE = np.dtype(
    [
        ("magic", "S2"),
        ("version", "u1"),
        ("reserved", "u1"),
        ("event_src_id", ">u4"),
        ("event_number", ">u8"),
        ("avg_event_rate_hz", ">u4"),
        ("unix_time_ns", ">u8"),
    ]
)
HEADERS_DTYPE = np.dtype([("lb", LB_DTYPE), ("re", RE_DTYPE)])
RE_BYTE0 = RE_VERSION << 4

assert LB_DTYPE.itemsize == LB_HEADER_LEN
assert RE_DTYPE.itemsize == RE_HEADER_LEN
assert SYNC_DTYPE.itemsize == SYNC_HEADER_LEN

_LB = struct.Struct(">2sBBHHQ")
_RE = struct.Struct(">BBHIIQ")
_SYNC = struct.Struct(">2sBBIQIQ")


class WireError(FieldError):
    """Header bytes or a header field with a value the protocol does not allow; names the field and
    the value. Only for wire facts: arguments raise ejlb.errors.ArgumentError."""


def _uint(field: str, value, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise WireError(field, value, f"must be an integer (u{bits})")
    if not 0 <= value < (1 << bits):
        raise WireError(field, value, f"out of range for u{bits}")
    return int(value)


def _need(buf, n: int, what: str) -> memoryview:
    mv = memoryview(buf).cast("B")
    if len(mv) < n:
        raise WireError(f"{what}.length", len(mv), f"truncated: {what} header needs {n} bytes")
    return mv


# --- LB header -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LBHeader:
    """LB header. v2: `entropy` picks the worker port, slot from tick. v3: `entropy` is
    port_select and `slot_select` picks the slot."""

    tick: int
    entropy: int = 0
    version: int = 2
    slot_select: int = 0

    def __post_init__(self) -> None:
        if self.version not in LB_VERSIONS:
            raise WireError("lb.version", self.version, "must be 2 or 3")
        _uint("lb.tick", self.tick, 64)
        _uint("lb.entropy", self.entropy, 16)
        _uint("lb.slot_select", self.slot_select, 16)
        if self.version == 2 and self.slot_select:
            raise WireError("lb.slot_select", self.slot_select, "reserved in version 2, must be 0")

    @property
    def slot_key(self) -> int:
        """The 16 bits the LB hashes into a slot."""
        return self.tick & 0xFFFF if self.version == 2 else self.slot_select

    def encode(self) -> bytes:
        return _LB.pack(LB_MAGIC, self.version, LB_NEXT_PROTO_RE, self.slot_select, self.entropy, self.tick)

    @classmethod
    def decode(cls, buf) -> "LBHeader":
        """Checks magic, version and next protocol; a v2 header's reserved field is ignored (read
        as 0), see the validity rule at the top of this module."""
        mv = _need(buf, LB_HEADER_LEN, "lb")
        magic, version, nxt, slot_select, entropy, tick = _LB.unpack_from(mv)
        if magic != LB_MAGIC:
            raise WireError("lb.magic", magic, "must be b'LB'")
        if version not in LB_VERSIONS:
            raise WireError("lb.version", version, "must be 2 or 3")
        if nxt != LB_NEXT_PROTO_RE:
            raise WireError("lb.next_proto", nxt, "must be 1 (RE header follows)")
        return cls(tick=tick, entropy=entropy, version=version, slot_select=slot_select if version == 3 else 0)


# --- RE header -------------------------------------------------------------------------------
@dataclass(frozen=True)
class REHeader:
    data_id: int
    offset: int
    length: int
    event_number: int

    def __post_init__(self) -> None:
        _uint("re.data_id", self.data_id, 16)
        _uint("re.offset", self.offset, 32)
        _uint("re.length", self.length, 32)
        _uint("re.event_number", self.event_number, 64)

    def encode(self) -> bytes:
        return _RE.pack(RE_BYTE0, 0, self.data_id, self.offset, self.length, self.event_number)

    @classmethod
    def decode(cls, buf) -> "REHeader":
        mv = _need(buf, RE_HEADER_LEN, "re")
        b0, b1, data_id, offset, length, event_number = _RE.unpack_from(mv)
        if b0 != RE_BYTE0:
            raise WireError("re.version", b0, "byte 0 must be 0x10 (version 1, reserved 0)")
        if b1 != 0:
            raise WireError("re.reserved", b1, "must be 0")
        return cls(data_id, offset, length, event_number)

    def check_fragment(self, fragment_len: int) -> None:
        """Raise unless a fragment of `fragment_len` bytes at this offset fits the event."""
        if self.offset + fragment_len > self.length or (fragment_len == 0 and self.length != 0):
            raise WireError(
                "re.offset",
                self.offset,
                f"fragment of {fragment_len} bytes does not fit event length {self.length}",
            )


# --- Sync header -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncHeader:
    event_src_id: int
    event_number: int
    avg_event_rate_hz: int
    unix_time_ns: int

    def __post_init__(self) -> None:
        _uint("sync.event_src_id", self.event_src_id, 32)
        _uint("sync.event_number", self.event_number, 64)
        _uint("sync.avg_event_rate_hz", self.avg_event_rate_hz, 32)
        _uint("sync.unix_time_ns", self.unix_time_ns, 64)

    def encode(self) -> bytes:
        return _SYNC.pack(
            SYNC_MAGIC, SYNC_VERSION, 0, self.event_src_id, self.event_number,
            self.avg_event_rate_hz, self.unix_time_ns,
        )

    @classmethod
    def decode(cls, buf) -> "SyncHeader":
        """Strict, like deployed control planes: exactly 28 bytes, magic "LC", version 2."""
        mv = memoryview(buf).cast("B")
        if len(mv) != SYNC_HEADER_LEN:
            raise WireError("sync.length", len(mv), f"a sync datagram is exactly {SYNC_HEADER_LEN} bytes")
        magic, version, reserved, src, evt, rate, ns = _SYNC.unpack_from(mv)
        if magic != SYNC_MAGIC:
            raise WireError("sync.magic", magic, "must be b'LC'")
        if version != SYNC_VERSION:
            raise WireError("sync.version", version, "must be 2")
        if reserved != 0:
            raise WireError("sync.reserved", reserved, "must be 0")
        return cls(src, evt, rate, ns)


# --- sizes -----------------------------------------------------------------------------------
def header_overhead(ipv6: bool = False) -> int:
    """Bytes per datagram before the fragment: IP + UDP + LB + RE (64 for IPv4, 84 for IPv6)."""
    return (IPV6_HEADER_LEN if ipv6 else IPV4_HEADER_LEN) + UDP_HEADER_LEN + HEADERS_LEN


def max_payload(mtu: int = DEFAULT_MTU, ipv6: bool = False) -> int:
    """Largest fragment (event bytes per datagram) at this MTU: MTU - 64 (IPv4) / - 84 (IPv6)."""
    over = header_overhead(ipv6)
    if isinstance(mtu, bool) or not isinstance(mtu, (int, np.integer)) or not over < mtu <= MAX_MTU:
        raise ArgumentError("mtu", mtu, f"must be an integer with {over} < mtu <= {MAX_MTU}")
    return int(mtu) - over


def fragment_count(event_len: int, fragment_size: int) -> int:
    """Datagrams for one event. A zero-length event still sends one header-only datagram."""
    _uint("event.length", event_len, 32)
    if fragment_size <= 0:
        raise ArgumentError("fragment_size", fragment_size, "must be positive")
    return max(1, -(-event_len // fragment_size))


def slot_for(slot_key: int, bits: int = SLOT_BITS, xor: int = 0) -> int:
    """Calendar slot: (slot_select XOR xor) AND (2^bits - 1)."""
    return (slot_key ^ xor) & ((1 << bits) - 1)


def port_for(base_port: int, port_select: int, port_bits: int) -> int:
    """Worker port: base + (entropy AND (2^bits - 1)) -- an addition, not an OR."""
    return base_port + (port_select & ((1 << port_bits) - 1))


# --- batches ---------------------------------------------------------------------------------
def fragment_headers(
    event_len: int,
    fragment_size: int,
    *,
    tick: int,
    entropy: int,
    data_id: int,
    event_number: int,
    version: int = 2,
    slot_select: int | None = None,
) -> np.ndarray:
    """LB+RE headers of every fragment of one event at once: an (N,) HEADERS_DTYPE array whose
    `.view(np.uint8).reshape(N, 36)` are the wire bytes. No Python loop per fragment."""
    if version == 3 and slot_select is None:
        slot_select = tick & 0xFFFF
    first = LBHeader(tick=tick, entropy=entropy, version=version, slot_select=slot_select or 0)
    REHeader(data_id=data_id, offset=0, length=event_len, event_number=event_number)
    n = fragment_count(event_len, fragment_size)
    out = np.empty(n, HEADERS_DTYPE)
    lb, re = out["lb"], out["re"]
    lb["magic"] = LB_MAGIC
    lb["version"] = first.version
    lb["next_proto"] = LB_NEXT_PROTO_RE
    lb["slot_select"] = first.slot_select
    lb["port_select"] = first.entropy
    lb["tick"] = first.tick
    re["version"] = RE_BYTE0
    re["reserved"] = 0
    re["data_id"] = data_id
    re["offset"] = np.arange(n, dtype=np.uint64) * fragment_size
    re["length"] = event_len
    re["event_number"] = event_number
    return out


def parse_headers(rows: np.ndarray, with_lb: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Parse a batch of received datagram heads at once.

    `rows` is an (N, K) uint8 array holding the first K >= header bytes of N datagrams. Returns
    (headers, ok): a zero-copy structured view (HEADERS_DTYPE with LB, RE_DTYPE without) and a
    boolean mask of the rows whose headers are valid."""
    need = HEADERS_LEN if with_lb else RE_HEADER_LEN
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] < need:
        raise ArgumentError("rows.shape", rows.shape, f"need a 2-D uint8 array with at least {need} columns")
    heads = np.ascontiguousarray(rows[:, :need]).view(HEADERS_DTYPE if with_lb else RE_DTYPE)[:, 0]
    re = heads["re"] if with_lb else heads
    ok = (re["version"] == RE_BYTE0) & (re["reserved"] == 0)
    if with_lb:
        lb = heads["lb"]
        ok &= (lb["magic"] == LB_MAGIC) & np.isin(lb["version"], LB_VERSIONS)
        ok &= lb["next_proto"] == LB_NEXT_PROTO_RE  # v2's reserved field: ignored (module doc)
    return heads, ok


# --- C header generation (one source of truth) -----------------------------------------------
def _offsets(prefix: str, dtype: np.dtype) -> list[str]:
    return [f"#define EJLB_{prefix}_OFF_{name.upper()} {dtype.fields[name][1]}" for name in dtype.names]


def c_header() -> str:
    """Text of csrc/ejlb_wire.h: the constants and field offsets above, for the C core."""
    lines = [
        "/* Generated by `python -m ejlb.wire > csrc/ejlb_wire.h` from src/ejlb/wire.py. Do not edit. */",
        "#ifndef EJLB_WIRE_H",
        "#define EJLB_WIRE_H",
        "/* EJLB_CDEF_BEGIN */",
        f"#define EJLB_LB_MAGIC0 0x{LB_MAGIC[0]:02x}",
        f"#define EJLB_LB_MAGIC1 0x{LB_MAGIC[1]:02x}",
        f"#define EJLB_LB_V2 {LB_VERSIONS[0]}",
        f"#define EJLB_LB_V3 {LB_VERSIONS[1]}",
        f"#define EJLB_LB_NEXT_PROTO_RE {LB_NEXT_PROTO_RE}",
        f"#define EJLB_RE_BYTE0 0x{RE_BYTE0:02x}",
        f"#define EJLB_SYNC_MAGIC0 0x{SYNC_MAGIC[0]:02x}",
        f"#define EJLB_SYNC_MAGIC1 0x{SYNC_MAGIC[1]:02x}",
        f"#define EJLB_SYNC_VERSION {SYNC_VERSION}",
        f"#define EJLB_LB_HEADER_LEN {LB_HEADER_LEN}",
        f"#define EJLB_RE_HEADER_LEN {RE_HEADER_LEN}",
        f"#define EJLB_SYNC_HEADER_LEN {SYNC_HEADER_LEN}",
        f"#define EJLB_HEADERS_LEN {HEADERS_LEN}",
        f"#define EJLB_CALENDAR_SLOTS {CALENDAR_SLOTS}",
        f"#define EJLB_MAX_MTU {MAX_MTU}",
        *_offsets("LB", LB_DTYPE),
        *_offsets("RE", RE_DTYPE),
        *_offsets("SYNC", SYNC_DTYPE),
        "/* EJLB_CDEF_END */",
        "#endif",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(c_header(), end="")
