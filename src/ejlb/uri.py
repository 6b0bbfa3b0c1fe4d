"""EJFAT URIs: where the control plane, the data plane and the sync listener of a reservation are.

    ejfat[s]://[TOKEN@]HOST:PORT/[lb/LB_ID][?QUERY]
    QUERY: sync=IPV4:PORT  sync=[IPV6]:PORT  data=IPV4[:PORT[-MAXPORT]]  data=[IPV6][:PORT[-MAXPORT]]
           sessionid=ID

Pure parsing: a URI keeps one sync and one data address per IP family (current control planes return
both), `data=` without a port means the FPGA's whole EJFAT range 16384-32767.

Query values may be percent-encoded (RFC 3986): clients built on Boost.URL refuse a literal `[`/`]`
in a query, so `data=%5B2001:db8::10%5D:19522` is the same as `data=[2001:db8::10]:19522`;
`format(encode_brackets=True)` prints that form. A `%` not followed by two hex digits is an error.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Union

from ejlb.errors import EjlbError
from ejlb.wire import DATA_PORT_MAX, DATA_PORT_MIN

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
ENV_VAR = "EJFAT_URI"
MIN_EXPLICIT_PORT = 1024
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_ID = re.compile(r"^[0-9]+$")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


class URIError(EjlbError, ValueError):
    """A malformed EJFAT URI; the message names the offending part."""

    def __init__(self, part: str, value: str, reason: str):
        self.part = part
        self.value = value
        super().__init__(f"{part}={value!r}: {reason}")


@dataclass(frozen=True)
class SyncAddress:
    ip: IPAddress
    port: int

    @property
    def family(self) -> int:
        return self.ip.version

    def __str__(self) -> str:
        return f"{_bracket(self.ip)}:{self.port}"


@dataclass(frozen=True)
class DataAddress:
    """A data-plane address. `port_given` remembers whether the URI named ports (for round-trips)."""

    ip: IPAddress
    min_port: int = DATA_PORT_MIN
    max_port: int = DATA_PORT_MAX
    port_given: bool = False

    @property
    def family(self) -> int:
        return self.ip.version

    @property
    def port(self) -> int:
        return self.min_port

    @property
    def ports(self) -> range:
        return range(self.min_port, self.max_port + 1)

    def __str__(self) -> str:
        if not self.port_given:
            return _bracket(self.ip)
        if self.min_port == self.max_port:
            return f"{_bracket(self.ip)}:{self.min_port}"
        return f"{_bracket(self.ip)}:{self.min_port}-{self.max_port}"


def _bracket(ip: IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _port(part: str, text: str) -> int:
    if not text.isdigit():
        raise URIError(part, text, "port must be a decimal number")
    port = int(text)
    if not MIN_EXPLICIT_PORT <= port <= 65535:
        raise URIError(part, text, f"port must be in {MIN_EXPLICIT_PORT}..65535")
    return port


def _split_host_port(part: str, text: str) -> tuple[str, str | None]:
    """'[v6]:p' / 'v4:p' / 'name:p' / bare host -> (host, port text or None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise URIError(part, text, "unterminated '[' in IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise URIError(part, text, "expected ':PORT' after ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise URIError(part, text, f"{host!r} is not an IPv6 address") from None
        return f"[{host}]", (rest[1:] if rest else None)
    if text.count(":") > 1:
        raise URIError(part, text, "IPv6 addresses must be in brackets: [ADDR]:PORT")
    host, sep, port = text.partition(":")
    if sep and not port:
        raise URIError(part, text, "empty port after ':'")
    return host, (port if sep else None)


def _unquote(key: str, value: str) -> str:
    """Percent-decoded query value (ASCII only: every value is an address, port or id)."""
    if "%" not in value:
        return value
    if value.count("%") != len(_PERCENT.findall(value)):
        raise URIError(key, value, "'%' must start a percent-escape: %XX with two hex digits")
    out = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), value)
    if not out.isascii() or not out.isprintable():
        raise URIError(key, value, "percent-escapes must decode to printable ASCII")
    return out


def _ip(part: str, text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise URIError(part, text, "not an IPv4 address or a bracketed IPv6 address") from None


def _parse_sync(text: str) -> SyncAddress:
    host, port = _split_host_port("sync", text)
    if port is None:
        raise URIError("sync", text, "needs ADDRESS:PORT")
    return SyncAddress(_ip("sync", host), _port("sync", port))


def _parse_data(text: str) -> DataAddress:
    host, ports = _split_host_port("data", text)
    ip = _ip("data", host)
    if ports is None:
        return DataAddress(ip)
    lo_text, dash, hi_text = ports.partition("-")
    lo = _port("data", lo_text)
    hi = _port("data", hi_text) if dash else lo
    if hi < lo:
        raise URIError("data", text, f"port range {lo}-{hi} is empty (MIN > MAX)")
    return DataAddress(ip, lo, hi, port_given=True)


@dataclass(frozen=True)
class EjfatURI:
    host: str
    port: int
    tls: bool = False
    token: str | None = None
    lb_id: str | None = None
    session_id: str | None = None
    sync: dict[int, SyncAddress] = field(default_factory=dict)  # by IP family 4 / 6
    data: dict[int, DataAddress] = field(default_factory=dict)

    # -- parsing -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> "EjfatURI":
        if not isinstance(text, str):
            raise URIError("uri", repr(text), "must be a string")
        text = text.strip()
        scheme, sep, rest = text.partition("://")
        if not sep:
            raise URIError("uri", text, "expected ejfat://... or ejfats://...")
        if scheme not in ("ejfat", "ejfats"):
            raise URIError("scheme", scheme, "must be 'ejfat' or 'ejfats'")
        rest, _, query = rest.partition("?")
        if "#" in query or "#" in rest:
            raise URIError("uri", text, "fragments ('#') are not allowed")
        authority, slash, path = rest.partition("/")
        userinfo, at, hostport = authority.rpartition("@")
        token = None
        if at:
            if not userinfo or any(c in userinfo for c in "/?#[]"):
                raise URIError("token", userinfo, "empty or contains a reserved character")
            token = userinfo
        host, port_text = _split_host_port("host", hostport)
        if not host:
            raise URIError("host", hostport, "missing host")
        if not host.startswith("["):
            is_ipv4 = re.fullmatch(r"[0-9.]+", host) is not None
            if is_ipv4:
                try:
                    ipaddress.IPv4Address(host)
                except ValueError:
                    raise URIError("host", host, "not a valid IPv4 address") from None
            elif not _HOSTNAME.match(host):
                raise URIError("host", host, "not a valid host name")
        if port_text is None:
            raise URIError("port", hostport, "the control-plane port is required (HOST:PORT)")
        port = _port("port", port_text)

        lb_id = None
        path = path.rstrip("/")
        if path:
            kind, _, ident = path.partition("/")
            if kind != "lb" or not _ID.match(ident):
                raise URIError("path", "/" + path, "expected '/' or '/lb/<decimal id>'")
            lb_id = ident

        sync: dict[int, SyncAddress] = {}
        data: dict[int, DataAddress] = {}
        session_id = None
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            if not eq or not value:
                raise URIError(key or "query", item, "expected KEY=VALUE")
            value = _unquote(key, value)
            if key == "sync":
                addr = _parse_sync(value)
                if addr.family in sync:
                    raise URIError("sync", value, f"a second IPv{addr.family} sync address")
                sync[addr.family] = addr
            elif key == "data":
                addr = _parse_data(value)
                if addr.family in data:
                    raise URIError("data", value, f"a second IPv{addr.family} data address")
                data[addr.family] = addr
            elif key == "sessionid":
                if not _ID.match(value) or session_id is not None:
                    raise URIError("sessionid", value, "must appear once, as a decimal id")
                session_id = value
            else:
                raise URIError(key, value, "unknown query key (known: sync, data, sessionid)")
        return cls(host=host, port=port, tls=scheme == "ejfats", token=token, lb_id=lb_id,
                   session_id=session_id, sync=sync, data=data)

    @classmethod
    def from_env(cls, var: str = ENV_VAR) -> "EjfatURI":
        text = os.environ.get(var)
        if not text:
            raise URIError(var, "", "environment variable is not set and no URI was given")
        return cls.parse(text)

    # -- rendering ---------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.format()

    def format(self, encode_brackets: bool = False) -> str:
        """The URI text; `encode_brackets` writes IPv6 brackets in the query as %5B/%5D (for
        Boost.URL-based clients, which refuse them literal there)."""
        out = "ejfats://" if self.tls else "ejfat://"
        if self.token:
            out += self.token + "@"
        out += f"{self.host}:{self.port}/"
        if self.lb_id is not None:
            out += f"lb/{self.lb_id}"
        query = [f"sync={self.sync[f]}" for f in (4, 6) if f in self.sync]
        query += [f"data={self.data[f]}" for f in (4, 6) if f in self.data]
        if self.session_id is not None:
            query.append(f"sessionid={self.session_id}")
        text = "&".join(query)
        if encode_brackets:
            text = text.replace("[", "%5B").replace("]", "%5D")
        return out + ("?" + text if text else "")

    def __hash__(self) -> int:
        return hash(str(self))

    def with_(self, **changes) -> "EjfatURI":
        """A copy with fields replaced (e.g. token=..., lb_id=...)."""
        return dataclasses.replace(self, **changes)

    # -- what each tool needs ---------------------------------------------------------------------
    @property
    def control_target(self) -> str:
        """gRPC target of the control plane: 'host:port' (IPv6 stays bracketed)."""
        return f"{self.host}:{self.port}"

    def data_address(self, family: int | None = None) -> DataAddress:
        """The data address for IPv4/IPv6 (family 4 or 6), or the IPv4 one else the IPv6 one."""
        return self._pick("data", self.data, family)

    def sync_address(self, family: int | None = None) -> SyncAddress:
        return self._pick("sync", self.sync, family)

    def port_range(self, family: int | None = None) -> tuple[int, int]:
        addr = self.data_address(family)
        return addr.min_port, addr.max_port

    @staticmethod
    def _pick(what: str, table: dict, family: int | None):
        if family not in (None, 4, 6):
            raise URIError("family", str(family), "must be 4 or 6")
        for f in ((family,) if family else (4, 6)):
            if f in table:
                return table[f]
        wanted = f"IPv{family} " if family else ""
        raise URIError(what, "", f"the URI has no {wanted}{what} address")
