"""ejlb.Receiver: whole events out of EJFAT datagrams, for HPC workers.

    with Receiver(uri, "10.0.0.5", 19522, threads=2) as rx:
        for ev in rx:                       # Event(event_number, data_id, payload)
            data = np.frombuffer(ev.payload, np.float32)

Thin I/O shell. Python opens and binds the sockets (2^port_range consecutive ports, IPv4 or IPv6,
UDP GRO when the kernel has it); the native core (csrc/recv.c) receives on them in GIL-free threads,
reassembles events into pooled buffers and queues completed ones; Python only touches whole
events. The reassembly rules are those of the pure reference in ejlb.shim.reassembly. With a
control-plane URI the receiver registers, reports its queue fill and a PID control signal every
`state_period` (ejlb.shim.state) and deregisters on close.
"""
from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import random
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, fields
from typing import Iterator

from ejlb import sendstate
from ejlb.errors import ArgumentError
from ejlb.native import ffi, lib
from ejlb.sendstate import SendStateTotals
from ejlb.shim.events import LOST_EVICTED, LOST_TIMEOUT, Event, LostEvent, ReceiverClosed
from ejlb.shim.pid import PID, PIDGains
from ejlb.shim.state import DEFAULT_MAX_FACTOR, DEFAULT_MIN_FACTOR
from ejlb.sockopt import SO_RCVBUFFORCE, SOL_UDP, UDP_GRO
from ejlb.wire import DATA_PORT_MAX, DATA_PORT_MIN, MAX_PORT_RANGE

__all__ = ["Receiver", "ReceiverConfig", "Event", "ReceiverStats", "LostEvent", "ReceiverClosed", "trim_buffer_pool"]

DEFAULT_RCVBUF = 32 << 20
_WAIT_SLICE_MS = 200  # recv() returns to Python this often so that Ctrl-C works
_LOST_REASONS = {lib.EJLB_RX_LOST_TIMEOUT: LOST_TIMEOUT, lib.EJLB_RX_LOST_EVICTED: LOST_EVICTED}


@dataclass(frozen=True)
class ReceiverStats(SendStateTotals):
    """The seven EJFAT SendState totals (inherited: ejlb.sendstate), then ejlb's own counters (see
    csrc/recv.h)."""

    bad_headers: int = 0
    bad_fragments: int = 0
    duplicates: int = 0
    overlaps: int = 0
    lost: int = 0
    evicted: int = 0
    gro_buffers: int = 0
    cpu_ns: int = 0  # CPU time of the native receive threads, summed (not the application's dequeue)
    placed: int = 0  # datagrams received straight into their event buffer (speculative placement hit)
    evicted_byte_cap: int = 0  # of evicted: to fit max_pending_bytes
    evicted_event_cap: int = 0  # of evicted: to fit max_pending_events


def _check_ip(ip) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(ip))
    except ValueError:
        raise ArgumentError("ip", ip, "expected an IPv4 or IPv6 address literal") from None


def _open_socket(family: int, ip: str, port: int, rcvbuf: int, gro: bool) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:  # root may exceed net.core.rmem_max; others get what the sysctl allows
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if gro:
            try:
                s.setsockopt(SOL_UDP, UDP_GRO, 1)
            except OSError:
                pass  # older kernel: plain recvmmsg, same code path
        s.bind((ip, port))
    except BaseException:
        s.close()
        raise
    return s


def bind_ports(ip: str, base_port: int, count: int, *, rcvbuf: int = DEFAULT_RCVBUF, gro: bool = True,
               attempts: int = 64) -> list[socket.socket]:
    """Binds `count` consecutive UDP ports from base_port; base_port 0 picks a free block in the
    EJFAT data-port range."""
    family = socket.AF_INET6 if _check_ip(ip).version == 6 else socket.AF_INET
    if base_port:
        if not 1 <= base_port <= 65536 - count:
            raise ArgumentError("base_port", base_port, f"{count} ports from it must fit below 65536")
        bases = [base_port]
    else:
        bases = [random.randrange(DATA_PORT_MIN, DATA_PORT_MAX - count + 2) for _ in range(attempts)]
    for base in bases:
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                socks.append(_open_socket(family, ip, port, rcvbuf, gro))
            return socks
        except OSError as e:
            for s in socks:
                s.close()
            if base_port or e.errno != errno.EADDRINUSE:
                raise OSError(e.errno, f"binding UDP {ip} port {base + len(socks)}: {e.strerror}") from None
    raise OSError(errno.EADDRINUSE, f"no {count} consecutive free UDP ports on {ip} after {attempts} tries")


@dataclass(frozen=True)
class ReceiverConfig:
    """How a Receiver receives and reports; validated when made (ArgumentError naming field and
    value), so a bad option fails before any socket is opened.

    threads: native receive threads; ports are spread over them (port i -> thread i % threads).
    port_range: entropy bits (0..14); None: the fewest ports that give every thread one.
    with_lb_header: datagrams start with the LB header (back-to-back, no load balancer).
    keep_lb_header: ask the LB to keep its header (implies with_lb_header).
    event_timeout: seconds from an event's first fragment until it is given up as lost.
    max_pending_bytes: cap on bytes held by incomplete events (claimed length + 256 B each), shared
        by the threads; a thread makes room by evicting its own incomplete events (those with one
        fragment first, then the least recently progressed: stats say which cap), and an
        event that cannot fit is refused (bad_fragments) -- so events longer than the cap never
        arrive: raise it for multi-GiB events.
    max_pending_events: cap on incomplete events, split evenly over the threads (evicted likewise).
    queue_size: completed events waiting for the application; when full they are dropped and
        counted (event_enqueue_err). The reported fill is depth / queue_size.
    lost_log_size: how many recent lost/evicted events lost_events() keeps.
    rcvbuf: SO_RCVBUF per socket (forced past rmem_max when root): the slack for scheduling hiccups.
    gro: enable UDP GRO when the kernel has it (False: plain recvmmsg; gro_enabled() tells).
    register: None registers when the URI has a control plane and a token; True insists, False never.
    name, weight, min_factor, max_factor: the worker's registration (name: host-pid-port).
    pid: (kp, ki, kd) or PIDGains for the control signal; defaults in ejlb.shim.pid.
    state_period: seconds between reports to the control plane.
    zmq_hwm: send high-water mark of a zmq_push endpoint.
    """

    threads: int = 1
    port_range: int | None = None
    with_lb_header: bool = False
    keep_lb_header: bool = False
    event_timeout: float = 0.5
    max_pending_bytes: int = 1 << 30
    max_pending_events: int = 16384
    queue_size: int = 1024
    lost_log_size: int = 1024
    rcvbuf: int = DEFAULT_RCVBUF
    gro: bool = True
    register: bool | None = None
    name: str | None = None
    weight: float = 1.0
    min_factor: float = DEFAULT_MIN_FACTOR
    max_factor: float = DEFAULT_MAX_FACTOR
    pid: PIDGains | tuple | None = None
    state_period: float = 0.1
    zmq_hwm: int = 16

    def __post_init__(self) -> None:
        _check_int("threads", self.threads, 1, 1 << MAX_PORT_RANGE)
        _check_int("port_range", self.ports_bits, 0, MAX_PORT_RANGE)
        if self.threads > 1 << self.ports_bits:
            raise ArgumentError("threads", self.threads, f"more than the 2^port_range={1 << self.ports_bits} ports")
        timeout = self.event_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise ArgumentError("event_timeout", timeout, "seconds, > 0 and <= 3600")
        _check_int("max_pending_bytes", self.max_pending_bytes, 1 << 16, 1 << 48)
        _check_int("max_pending_events", self.max_pending_events, self.threads, 1 << 24)
        _check_int("queue_size", self.queue_size, 1, 1 << 24)
        _check_int("lost_log_size", self.lost_log_size, 0, 1 << 20)
        _check_int("rcvbuf", self.rcvbuf, 1 << 12, 1 << 31)
        for fname in ("weight", "min_factor", "max_factor"):
            value = getattr(self, fname)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ArgumentError(fname, value, "must be a number >= 0")

    @property
    def ports_bits(self) -> int:
        """port_range, resolved: the fewest ports that give every thread one when not given."""
        return (self.threads - 1).bit_length() if self.port_range is None else self.port_range

    def native_options(self):
        """The ejlb_rx_options of csrc/recv.h."""
        opt = ffi.new("ejlb_rx_options *")
        opt.threads = self.threads
        opt.with_lb_header = bool(self.with_lb_header or self.keep_lb_header)
        opt.timeout_us = round(self.event_timeout * 1e6)
        opt.max_pending_bytes = self.max_pending_bytes
        opt.max_pending_events = self.max_pending_events
        opt.queue_size = self.queue_size
        opt.lost_log_size = self.lost_log_size
        return opt


class Receiver:
    """Receives EJFAT events on `2^port_range` ports from `base_port` (see module doc).

    uri: EjfatURI | str | None -- with a control plane and a token, the receiver registers
        (config.register says when).
    config: a ReceiverConfig; or its fields as keywords (Receiver(uri, ip, port, threads=2)), which
        are applied on top of `config` when both are given.
    zmq_push: endpoint string or zmq socket; events are then forwarded there (see zmq_bridge)
        instead of being returned by recv().
    manager: an LBManager-like object to register with instead of one built from the URI.
    """

    def __init__(self, uri=None, ip: str = "127.0.0.1", base_port: int = 0, config: ReceiverConfig | None = None,
                 *, zmq_push=None, manager=None, **options):
        self._closed = True  # until fully constructed, close() has nothing to undo
        self._lock = threading.Lock()
        config = config or ReceiverConfig()
        if options:
            unknown = set(options) - {f.name for f in fields(ReceiverConfig)}
            if unknown:
                raise TypeError(f"Receiver: unknown options {sorted(unknown)} (see ReceiverConfig)")
            config = dataclasses.replace(config, **options)
        self.config = config
        self.uri = _parse_uri(uri)
        self.ip = str(_check_ip(ip))
        self.port_range = config.ports_bits
        self.threads = config.threads
        self.pid = PID(config.pid)
        self._socks = bind_ports(self.ip, base_port, 1 << self.port_range, rcvbuf=config.rcvbuf, gro=config.gro)
        self.base_port = self._socks[0].getsockname()[1]
        fds = ffi.new("int[]", [s.fileno() for s in self._socks])
        err = ffi.new("char[256]")
        h = lib.ejlb_rx_new(fds, len(self._socks), config.native_options(), err, 256)
        if h == ffi.NULL:
            self._close_sockets()
            raise ValueError(ffi.string(err).decode())
        self._h = ffi.gc(h, lib.ejlb_rx_free)
        self._lost: deque[LostEvent] = deque(maxlen=config.lost_log_size)
        self._lost_next = 0
        self._reporter = None
        self._forwarder = None
        if lib.ejlb_rx_start(self._h, err, 256):
            self._close_sockets()
            raise OSError(ffi.string(err).decode())
        self._closed = False
        try:
            self._start_control(manager)
            if zmq_push is not None:
                from ejlb.shim.zmq_bridge import ZmqForwarder  # pyzmq is optional: imported when asked for

                self._forwarder = ZmqForwarder(self, zmq_push, hwm=config.zmq_hwm)
                self._forwarder.start()
        except BaseException:
            self.close()
            raise

    # --- control plane ---------------------------------------------------------------------------
    def _start_control(self, manager):
        c = self.config
        register = c.register
        has_cp = manager is not None or (self.uri is not None and bool(self.uri.token))
        if register is None:
            register = has_cp
        if not register:
            return
        if not has_cp:
            raise ArgumentError("register", True, "needs a URI with a control plane and a token")
        if self.ip in ("0.0.0.0", "::"):
            raise ArgumentError("ip", self.ip, "registering needs the address senders reach, not a wildcard")
        from ejlb.shim.state import StateReporter, WorkerSpec

        if manager is None:
            from ejlb.control.client import LBManager

            manager = LBManager(self.uri)
        spec = WorkerSpec(
            name=c.name or f"{socket.gethostname()}-{os.getpid()}-{self.base_port}", ip=self.ip,
            port=self.base_port, port_range=self.port_range, weight=c.weight, min_factor=c.min_factor,
            max_factor=c.max_factor, keep_lb_header=c.keep_lb_header,
        )
        self._reporter = StateReporter(
            manager, spec, fill=self.fill, totals=self._control_totals, pid=self.pid, period=c.state_period,
        )
        self._reporter.start()

    def _control_totals(self) -> dict[str, int]:
        return self.stats().columns()

    def fill(self) -> float:
        """Queue depth / capacity: the fill this receiver reports to the control plane."""
        return lib.ejlb_rx_queue_depth(self._h) / lib.ejlb_rx_queue_capacity(self._h)

    @property
    def registration(self):
        return None if self._reporter is None else self._reporter.registration

    # --- events ----------------------------------------------------------------------------------
    def _event(self, ev) -> Event:
        n = ev.length
        if n == 0:
            return Event(ev.event_number, ev.data_id, memoryview(b""))
        owner = ffi.gc(ev.data, lib.ejlb_buf_release, size=n)
        return Event(ev.event_number, ev.data_id, memoryview(ffi.buffer(owner, n)))

    def recv(self, timeout: float | None = None) -> Event:
        """Next event; waits up to `timeout` seconds (None: forever). Raises TimeoutError, or
        ReceiverClosed once the receiver is closed and its queue drained."""
        out = ffi.new("ejlb_rx_event[1]")
        self._wait(out, 1, timeout)
        return self._event(out[0])

    def recv_many(self, max_events: int = 64, timeout: float | None = None) -> list[Event]:
        """Between 1 and `max_events` events, as many as are ready once one is: one lock and one
        GIL release for the batch, for high event rates. Waits and raises like recv()."""
        _check_int("max_events", max_events, 1, 1 << 20)
        out = ffi.new("ejlb_rx_event[]", max_events)
        return [self._event(out[k]) for k in range(self._wait(out, max_events, timeout))]

    def _wait(self, out, max_events: int, timeout: float | None) -> int:
        count = ffi.new("int *")
        rc = lib.ejlb_rx_next_many(self._h, 0, out, max_events, count)  # the common, ready case
        if rc == lib.EJLB_RX_TIMEOUT and timeout != 0:
            deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            while rc == lib.EJLB_RX_TIMEOUT:
                remaining = _WAIT_SLICE_MS if deadline is None else round((deadline - time.monotonic()) * 1000)
                if remaining <= 0:
                    break
                rc = lib.ejlb_rx_next_many(self._h, min(_WAIT_SLICE_MS, remaining), out, max_events, count)
        if rc == lib.EJLB_RX_CLOSED:
            raise ReceiverClosed("receiver is closed")
        if rc == lib.EJLB_RX_TIMEOUT:
            raise TimeoutError(f"no event within {timeout} s")
        return count[0]

    def recv_nowait(self) -> Event | None:
        """The next completed event, or None when there is none (raises ReceiverClosed when closed)."""
        out = ffi.new("ejlb_rx_event *")
        rc = lib.ejlb_rx_next(self._h, 0, out)
        if rc == lib.EJLB_RX_OK:
            return self._event(out)
        if rc == lib.EJLB_RX_CLOSED:
            raise ReceiverClosed("receiver is closed")
        return None

    def __iter__(self) -> Iterator[Event]:
        """Events until the receiver is closed, one at a time: events the application has not
        reached yet stay in the queue, where the reported fill counts them."""
        while True:
            try:
                yield self.recv()
            except ReceiverClosed:
                return

    # --- accounting ------------------------------------------------------------------------------
    def stats(self) -> ReceiverStats:
        s = ffi.new("ejlb_rx_stats *")
        lib.ejlb_rx_get_stats(self._h, s)
        own = {f.name: getattr(s, f.name) for f in fields(ReceiverStats) if f.name not in sendstate.NAMES}
        return ReceiverStats(**{name: getattr(s.totals, name) for name in sendstate.NAMES}, **own)

    def lost_events(self) -> list[LostEvent]:
        """The most recent lost or evicted events (at most lost_log_size), oldest first."""
        with self._lock:
            buf = ffi.new("ejlb_rx_lost_event[]", 256)
            nxt = ffi.new("uint64_t *")
            while True:
                n = lib.ejlb_rx_lost(self._h, self._lost_next, buf, 256, nxt)
                for k in range(n):
                    e = buf[k]
                    self._lost.append(LostEvent(e.event_number, e.data_id, e.fragments, e.bytes, e.length,
                                                _LOST_REASONS.get(e.reason, str(e.reason))))
                self._lost_next = nxt[0]
                if n < 256:
                    return list(self._lost)

    @property
    def ports(self) -> range:
        return range(self.base_port, self.base_port + (1 << self.port_range))

    def gro_enabled(self) -> bool:
        return all(lib.ejlb_rx_gro_enabled(s.fileno()) for s in self._socks)

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Deregisters, stops forwarding and the receive threads, closes the sockets. Completed
        events still queued stay readable until drained; then recv() raises ReceiverClosed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._reporter is not None:
            self._reporter.stop()
        if self._forwarder is not None:
            self._forwarder.stop()
        lib.ejlb_rx_stop(self._h)  # joins the threads before their sockets close
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in getattr(self, "_socks", ()):
            s.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def trim_buffer_pool() -> int:
    """Frees the event buffers kept for reuse (at most 256 MiB, process-wide); returns the bytes."""
    n = lib.ejlb_buf_pooled_bytes()
    lib.ejlb_buf_pool_trim()
    return n


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ArgumentError(name, value, f"must be an integer in {lo}..{hi}")


def _parse_uri(uri):
    if uri is None:
        return None
    from ejlb.uri import EjfatURI

    if isinstance(uri, EjfatURI):
        return uri
    if isinstance(uri, str):
        return EjfatURI.parse(uri)
    raise TypeError(f"uri={uri!r}: expected an EjfatURI, a URI string or None")
