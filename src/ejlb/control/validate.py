"""Validation of request fields: each function returns the clean value or raises InvalidArgument
naming the field and the value. Pure (no state, no clock: `now` is passed in).

Choices where the spec is silent:
- ids (lbId, sessionId, resourceId) are canonical decimals only: ASCII digits, no sign, no spaces,
  no leading zeros. `" 2"` or `"02"` naming reservation 2 would let one id have many spellings.
- Timestamps need nanos 0..999 999 999 (google.protobuf.Timestamp); seconds are judged by each
  field's own rule (`until`: the future, before the year 3000).
- A worker address must be unicast: not unspecified, 0.0.0.0/8, multicast, or 240.0.0.0/4 (reserved;
  holds the limited broadcast 255.255.255.255), also when written as IPv4-mapped IPv6. A subnet's
  directed broadcast cannot be told from a host here (the prefix length is the worker's network's,
  unknown to the control plane); routers do not forward those by default (RFC 2644).
- controlSignal is refused beyond ±1e9 (not clamped): E2SAR's PID output is a fill error times
  gains, O(1)..O(1e3); anything near float32's 3e38 is a bug or hostile, and a clamped value would
  still dominate every other worker's weight.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence

from ejlb import sendstate
from ejlb.control.errors import InvalidArgument, ResourceExhausted
from ejlb.dataplane.tables import SenderLimit
from ejlb.wire import CALENDAR_SLOTS

MAX_NAME = 256
MAX_UNTIL = 32503680000.0  # 3000-01-01: a Timestamp beyond this is a client bug, not a reservation
MAX_CONTROL_SIGNAL = 1e9
TS_MIN, TS_MAX = -62135596800, 253402300799  # google.protobuf.Timestamp: 0001-01-01 .. 9999-12-31 (for rfc3339)
_CANONICAL_ID = re.compile(r"(?:0|[1-9][0-9]{0,17})")  # ≤ 18 digits: fits an SQLite INTEGER
_NON_UNICAST_V4 = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("240.0.0.0/4"))


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def decimal_id(field: str, value: str) -> int:
    if not isinstance(value, str) or not _CANONICAL_ID.fullmatch(value):
        raise InvalidArgument(f"{field}={value!r}: must be a decimal id (digits only: no sign, spaces "
                              "or leading zeros)")
    return int(value)


def timestamp(field: str, seconds: int, nanos: int) -> float:
    """Seconds since the epoch of a Timestamp's two fields."""
    if not 0 <= nanos <= 999_999_999:
        raise InvalidArgument(f"{field}.nanos={nanos}: must be 0..999999999")
    return seconds + nanos / 1e9


def until(value: float | None, now: float) -> float | None:
    if value is not None and not now < value < MAX_UNTIL:
        when = rfc3339(value) if TS_MIN <= value <= TS_MAX else f"{value:.0f} s"
        raise InvalidArgument(f"until={when}: must be in the future and before the year 3000")
    return value


def name(field: str, value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise InvalidArgument(f"{field}={value[:40]!r}: must be 1..{MAX_NAME} printable characters")
    return value


def finite(field: str, value: float, lo: float | None = None, hi: float | None = None) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or \
            (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f" in [{lo}, {hi}]" if hi is not None else (f" ≥ {lo}" if lo is not None else "")
        raise InvalidArgument(f"{field}={value!r}: must be a finite number{rng}")
    return float(value)


def control_signal(value: float) -> float:
    return finite("controlSignal", value, -MAX_CONTROL_SIGNAL, MAX_CONTROL_SIGNAL)


def totals(values: Mapping[str, int] | Sequence[int]) -> tuple[int, ...]:
    """The SendState counters in ejlb.sendstate.COLUMNS order, given by those names or as a sequence
    in that order; each a non-negative int64 (named by its proto field)."""
    names = sendstate.COLUMNS
    out = tuple(map(int, (values.get(k, 0) for k in names) if isinstance(values, Mapping) else values))
    if len(out) != len(names):
        raise InvalidArgument(f"totals: {len(out)} counters given, expected {len(names)}")
    if out and min(out) < 0:
        v, k = next((v, k) for v, k in zip(out, names) if v < 0)
        raise InvalidArgument(f"{sendstate.PROTO_OF[k]}={v}: a counter, must be ≥ 0")
    return out


def senders(addresses: Iterable[str]) -> list[str]:
    """Canonical addresses, each once ("::1" twice, or "::1" and "0::1", is one sender)."""
    out: dict[str, None] = {}
    for a in addresses:
        try:
            out[str(ipaddress.ip_address(a.strip()))] = None
        except ValueError:
            raise InvalidArgument(f"senderAddresses={a!r}: not an IPv4/IPv6 address") from None
    return list(out)


def worker_address(value: str, allow_private: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        addr = ipaddress.ip_address((value or "").strip())
    except ValueError:
        raise InvalidArgument(f"ipAddress={value!r}: not an IPv4/IPv6 address") from None
    v4 = addr if addr.version == 4 else addr.ipv4_mapped  # ::ffff:255.255.255.255 is a broadcast too
    if addr.is_unspecified or addr.is_multicast or (v4 is not None and (
            v4.is_multicast or any(v4 in n for n in _NON_UNICAST_V4))):
        raise InvalidArgument(f"ipAddress={value!r}: not a unicast address (unspecified, broadcast, "
                              "multicast or reserved)")
    if not allow_private and (addr.is_private or addr.is_loopback or addr.is_link_local):
        raise InvalidArgument(f"ipAddress={value!r}: not an allowed worker address (private/loopback disabled)")
    return addr


def demands(field: str, ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for index, length in ranges:
        if not -1 <= index < CALENDAR_SLOTS or not 1 <= length <= CALENDAR_SLOTS or \
                (index >= 0 and index + length > CALENDAR_SLOTS):
            raise InvalidArgument(f"{field}=(index {index}, length {length}): must lie within "
                                  f"0..{CALENDAR_SLOTS - 1} (index -1 = automatic)")
        out.append((int(index), int(length)))
    if sum(n for _, n in out) > CALENDAR_SLOTS:
        raise InvalidArgument(f"{field}: demands {sum(n for _, n in out)} slots, more than {CALENDAR_SLOTS}")
    return out


def sender_count(limit: SenderLimit, for_lb: int, total: int) -> None:
    """Refuses a reservation's sender list that the data plane in use cannot hold: longer than its
    per-instance limit (INVALID_ARGUMENT: no other reservation matters), or filling the table that
    all instances share (RESOURCE_EXHAUSTED: others hold the rest)."""
    if limit.per_lb is not None and for_lb > limit.per_lb:
        raise InvalidArgument(f"senderAddresses={for_lb} addresses: this data plane holds at most {limit.per_lb} "
                              "per load balancer")
    if limit.total is not None and total > limit.total:
        raise ResourceExhausted(f"senderAddresses={for_lb} addresses: would make {total} on this data plane, "
                                f"which holds {limit.total} for all load balancers together")
