"""Parsers for CLI argument values (durations, sizes, rates, IP addresses, token permissions).

Pure functions raising ValueError with a message that names the value; the click types below wrap
them so that a bad value is a usage error (exit 2) naming the option.
"""
from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timedelta, timezone

import click

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_CLOCK = re.compile(r"^\s*(\d+):(\d{1,2})(?::(\d{1,2}))?\s*$")  # lbadm's hh:mm[:ss]
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

# Token permission words as operators type them -> TokenPermission enum values (spec control-api.md).
RESOURCE_TYPES = {"all": 0, "lb": 1, "load_balancer": 1, "reservation": 2, "session": 3}
PERMISSION_TYPES = {"read_only": 0, "read": 0, "register": 1, "reserve": 2, "update": 3}


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '2h', '1.5d', '1w', or lbadm's 'hh:mm[:ss]'; a bare number is hours, as in
    lbadm's --duration (so an lbadm habit never turns a 12-hour reservation into 12 seconds)."""
    clock = _CLOCK.match(text or "")
    m = _DURATION.match(text or "")
    if clock:
        h, mins, secs = (int(g or 0) for g in clock.groups())
        if mins > 59 or secs > 59:
            raise ValueError(f"{text!r}: minutes and seconds must be below 60 in hh:mm[:ss]")
        seconds = h * 3600 + mins * 60 + secs
    elif m:
        seconds = float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "h").lower()]
    else:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 30m, 2h, 1d, 01:30)")
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=seconds)


def parse_until(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (example: 2026-11-21T18:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def parse_size(text: str) -> int:
    """Byte counts: '1500', '64k' (10^3), '1Mi' (2^20), '2GB'."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 1500, 64k, 1Mi, 2G)")
    value = float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()]
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def parse_ip(text: str) -> str:
    """A literal IPv4/IPv6 address (brackets allowed), normalised."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def parse_permission(text: str) -> tuple[int, str, int]:
    """'TYPE[:ID]:LEVEL' -> (resourceType, resourceId, permission), e.g. 'all:update',
    'reservation:3:read_only', 'lb:0:reserve'."""
    parts = [p.strip().lower() for p in text.split(":")]
    if len(parts) == 2:
        parts.insert(1, "")
    if len(parts) != 3:
        raise ValueError(f"{text!r}: expected TYPE[:ID]:LEVEL, e.g. all:update or reservation:3:read_only")
    kind, rid, level = parts
    if kind not in RESOURCE_TYPES:
        raise ValueError(f"{text!r}: resource type {kind!r} is not one of {', '.join(RESOURCE_TYPES)}")
    if level not in PERMISSION_TYPES:
        raise ValueError(f"{text!r}: permission {level!r} is not one of {', '.join(PERMISSION_TYPES)}")
    if RESOURCE_TYPES[kind] and not rid.isdigit():
        raise ValueError(f"{text!r}: {kind} needs a decimal id (TYPE:ID:LEVEL)")
    return RESOURCE_TYPES[kind], rid, PERMISSION_TYPES[level]


def parse_mtu(text: str) -> int | str:
    """'auto' (the route's MTU) or a number of bytes that leaves room for a fragment (ejlb.wire)."""
    from ejlb.errors import ArgumentError
    from ejlb.wire import max_payload

    if text.strip().lower() == "auto":
        return "auto"
    try:
        mtu = int(text)
        max_payload(mtu)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a usable MTU ({e})" if isinstance(e, ArgumentError) else
                         f"{text!r} is neither a number of bytes nor 'auto'") from None
    return mtu


def parse_host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); the port's range is the configuration's to check."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse_port_range(text: str) -> tuple[int, int]:
    """'PORT' or 'MIN-MAX' -> (min, max), 1 <= min <= max <= 65535."""
    lo, _, hi = text.partition("-")
    try:
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"{text!r}: expected PORT or MIN-MAX") from None
    if not 1 <= lo_i <= hi_i <= 65535:
        raise ValueError(f"{text!r}: need 1 <= MIN <= MAX <= 65535")
    return lo_i, hi_i


class _Parsed(click.ParamType):
    def __init__(self, name: str, fn):
        self.name = name
        self._fn = fn

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self._fn(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION = _Parsed("duration", parse_duration)
UNTIL = _Parsed("time", parse_until)
SIZE = _Parsed("size", parse_size)
IP = _Parsed("ip", parse_ip)
PERMISSION = _Parsed("permission", parse_permission)
MTU = _Parsed("mtu", parse_mtu)
