"""The software data plane: a thin shell around the native L4 forwarder in csrc/swlb.c.

`SoftwareLB` implements the `Backend` protocol. It listens on every LB instance's data addresses
(IPv4 and IPv6) and ports, and forwards the UDP payload of each datagram to the member chosen by
allow-list -> epoch -> slot -> calendar -> member, to port `base + (port_select & mask)`, with the
LB header stripped unless the member keeps it. Python only compiles tables and opens sockets; the
datagrams never touch it.

What an L4 forwarder cannot do that the FPGA does (all consequences of letting the kernel own the
IP/UDP headers), and what it does instead:
  - source IP: packets leave from the socket they arrived on, so the source IP *is* the LB
    instance's address (as in the FPGA), but the UDP source port is the LB's data port, not the
    sender's;
  - TTL / hop limit: not rewritten in place, but read (IP_RECVTTL / IPV6_RECVHOPLIMIT): <= 1 is
    dropped and counted, and the datagram leaves with TTL - 1 set per send (IP_TTL / IPV6_HOPLIMIT
    ancillary data), which is what the FPGA's rewrite amounts to;
  - MAC addresses: chosen by the kernel's routing/neighbour tables, not the member table;
  - the 16384..32767 port window: the software LB serves whatever data ports are configured;
  - parse failures and foreign destinations never reach it (the kernel drops them), so
    `drop_parse_fail` stays 0 and `drop_not_lb` only counts datagrams for an LB removed from the
    tables while its socket was still open;
  - byte counters count UDP payload bytes (rx) and forwarded payload bytes (tx), not frame bytes.
On every datagram it can see, its decision equals the reference model's (tests/test_dataplane_software.py).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from typing import Mapping

import numpy as np

from ejlb.dataplane.tables import (
    GLOBAL_COUNTERS,
    LB_RX_COUNTERS,
    MAX_MEMBERS,
    MEMBER_COUNTERS,
    NUM_EPOCHS,
    NUM_LBS,
    Counters,
    Drop,
    SenderLimit,
    TableDiff,
    TableError,
    Tables,
    apply,
)
from ejlb.native import ffi, lib
from ejlb.sockopt import IP_FREEBIND, IPV6_FREEBIND, SO_RCVBUFFORCE
from ejlb.wire import CALENDAR_SLOTS, DEFAULT_DATA_PORT

log = logging.getLogger(__name__)

MAX_PORTS_PER_INSTANCE = 256  # one socket per port and thread; wide ranges belong to the FPGA
DEFAULT_RCVBUF = 32 << 20  # absorbs bursts while the worker thread waits for a CPU


def sender_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """16-byte allow-list key: IPv6 as is, IPv4 as ::ffff:a.b.c.d (what the C core compares)."""
    return ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed


def compile_tables(tables: Tables):
    """The immutable table blob (`struct ejlb_swlb_tables *`) the native workers read."""
    t = ffi.new("struct ejlb_swlb_tables *")
    for lb_id, inst in tables.lbs.items():
        lb = t.lb[lb_id]
        lb.present = 1
        lb.slot_bits = inst.slot_bits
        lb.slot_xor = inst.slot_xor
    for (lb_id, epoch), rng in tables.epochs.items():
        e = t.lb[lb_id].epochs[epoch]
        e.valid, e.start, e.catch_all = 1, rng.start, int(rng.catch_all)
        e.open_end = int(rng.end is None)
        e.end = rng.end or 0
    cal = np.full((NUM_LBS, NUM_EPOCHS, CALENDAR_SLOTS), 0xFFFF, dtype=np.uint16)
    for (lb_id, epoch), slots in tables.calendars.items():
        cal[lb_id, epoch] = slots
    ffi.memmove(t.calendar, cal, cal.nbytes)
    for (lb_id, member_id), m in tables.members.items():
        e = t.member[lb_id][member_id]
        ffi.memmove(e.ip, sender_key(m.ip), 16)
        e.family, e.base_port, e.port_bits = m.ip.version, m.base_port, m.port_bits
        e.keep_lb_header, e.drop = int(m.keep_lb_header), int(m.drop)
    by_lb: dict[int, list[bytes]] = {}
    for lb_id, ip in tables.senders:
        by_lb.setdefault(lb_id, []).append(sender_key(ip))
    for lb_id, keys in by_lb.items():
        if len(keys) > lib.EJLB_SWLB_MAX_SENDERS:
            raise TableError(f"senders of lb {lb_id}: {len(keys)} > {lib.EJLB_SWLB_MAX_SENDERS} (software LB limit)")
        blob = b"".join(sorted(keys))
        ffi.memmove(t.senders[lb_id], blob, len(blob))
        t.lb[lb_id].n_senders = len(keys)
    return t


def decide(blob, lb_id: int, src, payload: bytes, ttl: int = -1):
    """The native per-datagram decision (no sockets): (Drop, verdict struct). For tests.
    ttl: the datagram's TTL / hop limit, -1 if unknown (no TTL stage)."""
    v = ffi.new("struct ejlb_swlb_verdict *")
    src = ipaddress.ip_address(src)
    code = lib.ejlb_swlb_decide(blob, lb_id, src.version, sender_key(src), ttl, payload, len(payload), v)
    return Drop(code), v


class SoftwareLB:
    """Backend: the native software LB.

    ports: LB id -> (min, max) data ports to listen on (default: DEFAULT_DATA_PORT only).
    threads: worker threads; each has its own SO_REUSEPORT socket per address and port.
    rcvbuf: receive buffer bytes per socket (forced past rmem_max when running as root)."""

    sender_limit = SenderLimit(per_lb=lib.EJLB_SWLB_MAX_SENDERS)  # declared in csrc/swlb.h (array size)

    def __init__(self, ports: Mapping[int, tuple[int, int]] | None = None, threads: int = 1,
                 rcvbuf: int = DEFAULT_RCVBUF):
        if not isinstance(threads, int) or not 1 <= threads <= lib.EJLB_SWLB_MAX_THREADS:
            raise ValueError(f"threads={threads!r}: must be 1..{lib.EJLB_SWLB_MAX_THREADS}")
        self.ports = dict(ports or {})
        for lb_id, (lo, hi) in self.ports.items():
            if not 1 <= lo <= hi <= 0xFFFF or hi - lo + 1 > MAX_PORTS_PER_INSTANCE:
                raise ValueError(f"ports[{lb_id}]={lo}-{hi}: need 1 <= min <= max <= 65535 and at most "
                                 f"{MAX_PORTS_PER_INSTANCE} ports (the software LB binds each one)")
        if isinstance(rcvbuf, bool) or not isinstance(rcvbuf, int) or not 4096 <= rcvbuf <= 1 << 31:
            raise ValueError(f"rcvbuf={rcvbuf!r}: bytes, 4096..2^31")
        self.threads = threads
        self.rcvbuf = rcvbuf
        self.installed = Tables()
        self._lock = threading.Lock()
        self._socks: dict[tuple[int, str, int], list[socket.socket]] = {}
        self._h = lib.ejlb_swlb_new(threads)
        if self._h == ffi.NULL:
            raise MemoryError("ejlb_swlb_new failed")
        self._check(lib.ejlb_swlb_install(self._h, compile_tables(self.installed)), "install")
        self._check(lib.ejlb_swlb_start(self._h), "start")

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc < 0:
            raise OSError(-rc, f"software LB {what}: {errno.errorcode.get(-rc, rc)}")

    # --- Backend protocol ---------------------------------------------------------------------
    def apply(self, d: TableDiff) -> None:
        with self._lock:
            new = apply(self.installed, d)
            blob = compile_tables(new)  # validate before touching sockets
            wanted = self._listen_set(new)
            opened = []
            try:
                for key in sorted(wanted - self._socks.keys()):
                    self._open(*key)
                    opened.append(key)
                self._check(lib.ejlb_swlb_install(self._h, blob), "install")
            except BaseException:
                for key in opened:  # all or nothing: the old tables stay installed with their sockets
                    self._close(key)
                raise
            for key in self._socks.keys() - wanted:
                self._close(key)
            self.installed = new

    def counters(self) -> Counters:
        lbc = np.zeros((NUM_LBS, lib.EJLB_LB_COUNTERS), np.uint64)
        mc = np.zeros((NUM_LBS, MAX_MEMBERS, len(MEMBER_COUNTERS)), np.uint64)
        glob = np.zeros(lib.EJLB_DROP_CODES, np.uint64)
        with self._lock:
            if self._h == ffi.NULL:
                raise RuntimeError("software LB is closed")
            lib.ejlb_swlb_counters(self._h, ffi.from_buffer("uint64_t[]", lbc), ffi.from_buffer("uint64_t[]", mc),
                                   ffi.from_buffer("uint64_t[]", glob))
        out = Counters()
        for name in GLOBAL_COUNTERS:
            out.glob[name] = int(glob[Drop[name.removeprefix("drop_").upper()]])
        for lb_id in range(NUM_LBS):
            if lb_id not in self.installed.lbs and not lbc[lb_id].any():
                continue
            c = out.lb_counters(lb_id)
            c.update(zip(LB_RX_COUNTERS, (int(x) for x in lbc[lb_id, :len(LB_RX_COUNTERS)])))
            for d in Drop:
                if d > Drop.NOT_LB:
                    c[d.counter] = int(lbc[lb_id, len(LB_RX_COUNTERS) + d])
        for lb_id, member_id in zip(*np.nonzero(mc.any(axis=2))):
            m = out.member_counters(int(lb_id), int(member_id))
            m.update(zip(MEMBER_COUNTERS, (int(x) for x in mc[lb_id, member_id])))
        for key in self.installed.members:
            out.member_counters(*key)
        return out

    # name -> index of the fast-path statistics, read by name from csrc/swlb.h (EJLB_SWLB_STAT_*)
    _STATS = dict(sorted(((n.removeprefix("EJLB_SWLB_STAT_").lower(), getattr(lib, n)) for n in dir(lib)
                          if n.startswith("EJLB_SWLB_STAT_")), key=lambda item: item[1]))

    def stats(self) -> dict[str, int]:
        """Fast-path statistics summed over the threads: syscalls, GSO/GRO use and send errors."""
        out = np.zeros(lib.EJLB_SWLB_STATS, np.uint64)
        lib.ejlb_swlb_stats(self._h, ffi.from_buffer("uint64_t[]", out))
        return {name: int(out[i]) for name, i in self._STATS.items()}

    def thread_stats(self) -> list[dict[str, int]]:
        """The same per worker thread (how SO_REUSEPORT spread the load)."""
        out = np.zeros(lib.EJLB_SWLB_STATS, np.uint64)
        result = []
        for thread in range(self.threads):
            self._check(lib.ejlb_swlb_thread_stats(self._h, thread, ffi.from_buffer("uint64_t[]", out)), "stats")
            result.append({name: int(out[i]) for name, i in self._STATS.items()})
        return result

    def cpu_seconds(self) -> list[float]:
        """CPU time used so far by each worker thread (for efficiency figures)."""
        out = np.zeros(self.threads, np.uint64)
        lib.ejlb_swlb_cpu_ns(self._h, ffi.from_buffer("uint64_t[]", out))
        return [float(x) / 1e9 for x in out]

    def close(self) -> None:
        with self._lock:
            if self._h == ffi.NULL:
                return
            lib.ejlb_swlb_stop(self._h)
            for socks in self._socks.values():
                for s in socks:
                    s.close()
            self._socks.clear()
            lib.ejlb_swlb_free(self._h)
            self._h = ffi.NULL

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- sockets ------------------------------------------------------------------------------
    @property
    def addresses(self) -> list[tuple[int, str, int]]:
        """(lb id, address, port) of every data socket."""
        return sorted(self._socks)

    def _listen_set(self, tables: Tables) -> set[tuple[int, str, int]]:
        out = set()
        for lb_id, inst in tables.lbs.items():
            lo, hi = self.ports.get(lb_id, (DEFAULT_DATA_PORT, DEFAULT_DATA_PORT))
            for ip in (inst.ipv4, inst.ipv6):
                if ip is not None:
                    out.update((lb_id, str(ip), port) for port in range(lo, hi + 1))
        return out

    def _open(self, lb_id: int, ip: str, port: int) -> None:
        v6 = ipaddress.ip_address(ip).version == 6
        socks = []
        try:
            for thread in range(self.threads):
                s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if v6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)  # LB addresses not (yet) configured
                else:
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                try:
                    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                s.bind((ip, port))
                self._check(lib.ejlb_swlb_add_socket(self._h, thread, s.fileno(), lb_id), "add socket")
        except OSError as e:
            for thread, s in enumerate(socks):
                lib.ejlb_swlb_remove_socket(self._h, thread, s.fileno())
                s.close()
            raise OSError(e.errno, f"software LB: cannot listen on lb {lb_id} [{ip}]:{port}: {e.strerror}") from None
        self._socks[(lb_id, ip, port)] = socks
        log.debug("software LB listening on lb %d [%s]:%d (%d threads)", lb_id, ip, port, self.threads)

    def _close(self, key) -> None:
        for thread, s in enumerate(self._socks.pop(key)):
            lib.ejlb_swlb_remove_socket(self._h, thread, s.fileno())
            s.close()
