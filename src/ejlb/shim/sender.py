"""`Sender`: pushes events to an EJFAT load balancer (or straight to a worker) over UDP.

    with Sender("ejfat://host:18347/lb/1?data=10.0.0.1:19522&sync=10.0.0.2:19523", data_id=5) as s:
        s.send(numpy_array)                       # blocking, zero-copy, GIL released while sending
        fut = s.submit(b"...", timeout=0.1)       # asynchronous through a bounded queue
        print(s.stats())

The I/O shell around pure cores: `plan` (layout, numbering, rotation), `pacing` (token bucket) and
`sync` (schedule); csrc/send.c lays the datagrams out and sends them with sendmmsg + UDP GSO.
"""
from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from ejlb.errors import ArgumentError, EjlbError
from ejlb.native import buffer_address, ffi, lib
from ejlb.shim.events import SenderClosed
from ejlb.shim.pacing import TokenBucket
from ejlb.shim.plan import Layout, Numbering, Rotation, SyncState, check_event_len, check_lb_version, check_uint
from ejlb.shim.sync import SyncSchedule, SyncThread
from ejlb.sockopt import IP_MTU, IPV6_MTU, SO_SNDBUFFORCE, UDP_SEGMENT
from ejlb.uri import EjfatURI, URIError
from ejlb.wire import DEFAULT_MTU, MAX_MTU


MIN_SLEEP_S = 200e-6  # shorter pacing waits are taken from burst credit instead of sleeping
DEFAULT_QUEUE_SIZE = 1024
# A batch (one native call in send_many and the submit thread) holds at most this many events and,
# unless the first event alone is larger, this many bytes: large enough that small events cost few
# system calls and GIL hand-offs, small enough that a batch never hogs the sockets for long. With
# pacing the byte bound is the bucket's burst instead, so batching never makes traffic burstier.
SEND_BATCH = 512
BATCH_BYTES = 4 << 20


class SendQueueFull(queue.Full, EjlbError):
    """`submit` found the queue full (immediately with block=False, or after `timeout`)."""


@dataclass(frozen=True)
class SenderStats:
    events: int  # events handed to the kernel (sent or refused)
    datagrams: int  # datagrams the kernel accepted
    bytes: int  # UDP payload bytes accepted, LB+RE headers included
    send_errors: int  # datagrams the kernel refused
    last_errno: int  # errno of the latest refusal (0 if none)
    sync_packets: int
    gso: bool  # UDP GSO in use right now
    messages: int = 0  # UDP sends accepted; a GSO super-datagram counts once
    syscalls: int = 0
    sync_errors: int = 0
    queued: int = 0  # events waiting in the submit queue


def route_mtu(family: int, ip: str, port: int) -> int:
    """MTU of the interface the kernel routes `ip` through, capped at the protocol's 9000."""
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((ip, port))
        if family == socket.AF_INET6:
            mtu = s.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        else:
            mtu = s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    return min(mtu, MAX_MTU)  # loopback says 65536


def _gso_mode(gso) -> str:
    mode = ("on" if gso else "off") if isinstance(gso, bool) else gso
    if mode not in ("auto", "on", "off"):
        raise ArgumentError("gso", gso, "must be 'auto', 'on', 'off' or a bool")
    return mode


def _kernel_takes_gso(sock: socket.socket, segment: int) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, segment)
        sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, 0)  # the core asks per message instead
        return True
    except OSError:
        return False


class Sender:
    """Sends events as EJFAT datagrams (LB + RE header + fragment) to the URI's data address.

    uri: EjfatURI or its text (None: $EJFAT_URI). The data address (IPv4 or IPv6, `family`
        picks when both are given) and its port range: events rotate over the range's
        destination ports, and over `sockets` send sockets (distinct source ports, for LAG/RSS
        spreading); `send` steps once per event, `send_many` and the submit thread per batch.
    data_id, event_src_id: RE data_id (per event overridable) and the Sync packets' sender id.
    mtu: 1500 by default, "auto" for the MTU of the route's interface (capped at 9000); each
        datagram is at most this long including IP and UDP headers.
    lb_version: LB header version 2 (default) or 3 (slot_select = tick & 0xFFFF,
        port_select = entropy).
    sndbuf: SO_SNDBUF bytes (forced past wmem_max when running as root); None keeps the default.
    rate_gbps: pace the average rate of UDP payload bytes (headers included) to this; None = no
        pacing. Events are never split by pacing: each leaves as one burst.
    sync_period, sync: send a Sync packet every period (default 1 s, at most 10 s) to the URI's
        sync address when `sync` is true and the URI has one.
    gso: "auto" uses UDP GSO when the kernel offers it; "on" raises if the kernel lacks it; "off".
        With "auto" or "on", a route that refuses GSO at send time (no checksum offload, IPsec,
        MTU below the segment) switches the sender to plain sendmmsg for good, losing nothing;
        `stats().gso` tells which is in use.
    queue_size: bound of the `submit` queue.
    zero_copy: False gathers each message into a staging buffer first; only to measure what
        zero-copy saves.

    A zero-length event is sent as one header-only datagram (RE length 0, offset 0), so that the
    receiver sees it. Events are at most 4 GiB - 1 bytes (the RE length field).
    """

    def __init__(
        self,
        uri: EjfatURI | str | None,
        *,
        data_id: int = 0,
        event_src_id: int = 0,
        mtu: int | str = DEFAULT_MTU,
        lb_version: int = 2,
        sockets: int = 4,
        sndbuf: int | None = None,
        rate_gbps: float | None = None,
        sync_period: float = 1.0,
        gso: str | bool = "auto",
        sync: bool = True,
        family: int | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        zero_copy: bool = True,
    ):
        self._closing = False
        self._closed = True  # until fully built, so close()/__del__ on a half-built Sender is safe
        self._socks: list[socket.socket] = []
        self._sync: SyncThread | None = None
        self._worker: threading.Thread | None = None
        self._last_future: Future | None = None
        self._tx = None
        if uri is None:
            uri = EjfatURI.from_env()
        self.uri = EjfatURI.parse(uri) if isinstance(uri, str) else uri
        data = self.uri.data_address(family)
        self.data_address = data
        ipv6 = data.ip.version == 6
        af = socket.AF_INET6 if ipv6 else socket.AF_INET
        if mtu == "auto":
            mtu = route_mtu(af, str(data.ip), data.min_port)
        self.layout = Layout.for_mtu(mtu, ipv6)
        self.lb_version = check_lb_version(lb_version)
        self.data_id = check_uint("data_id", data_id, 16)
        self.event_src_id = check_uint("event_src_id", event_src_id, 32)
        self._rotation = Rotation(sockets, data.min_port, data.max_port)
        self._bucket = TokenBucket(rate_gbps) if rate_gbps is not None else None
        self._batch_bytes = BATCH_BYTES if self._bucket is None else max(1, int(self._bucket.rate * self._bucket.burst_s))
        SyncSchedule(sync_period, 0.0)  # validates the period even when no sync is sent
        mode = _gso_mode(gso)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ArgumentError("queue_size", queue_size, "must be a positive integer")
        if sndbuf is not None and (isinstance(sndbuf, bool) or not isinstance(sndbuf, int) or sndbuf <= 0):
            raise ArgumentError("sndbuf", sndbuf, "must be a positive integer of bytes")

        try:
            for _ in range(sockets):
                s = socket.socket(af, socket.SOCK_DGRAM)
                self._socks.append(s)
                s.bind(("::" if ipv6 else "0.0.0.0", 0))
                if sndbuf:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
                    except OSError:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            use_gso = mode != "off" and self.layout.gso_segments > 1
            if use_gso and not _kernel_takes_gso(self._socks[0], self.layout.segment):
                if mode == "on":
                    raise OSError(f"gso='on': this kernel refuses UDP_SEGMENT (segment {self.layout.segment} B)")
                use_gso = False
            self._fds = [s.fileno() for s in self._socks]
            tx = lib.ejlb_tx_new(
                af, data.ip.packed, 0, self.lb_version, self.layout.fragment,
                self.layout.gso_segments, lib.EJLB_TX_GSO_ON if use_gso else lib.EJLB_TX_GSO_OFF,
                0 if zero_copy else 1,
            )
            if tx == ffi.NULL:
                raise MemoryError("ejlb_tx_new failed")
            self._tx = ffi.gc(tx, lib.ejlb_tx_free)
            self._lock = threading.Lock()  # one sender in the native context at a time
            self._life = threading.Lock()  # guards freeing the native context against stats()
            self._numbering = Numbering()
            self._sync_state = SyncState()
            self._queue: queue.Queue = queue.Queue(queue_size)
            self._closed = False
            if sync:
                self._start_sync(sync_period, ipv6)
        except BaseException:
            self.close()
            raise

    # -- sending ----------------------------------------------------------------------------------
    def send(self, event, *, event_number: int | None = None, data_id: int | None = None,
             entropy: int | None = None, tick: int | None = None) -> int:
        """Send one event now; returns its RE event number.

        `event`: any C-contiguous buffer (bytes, bytearray, memoryview, numpy array of any
        dtype), sent without copying. The GIL is released while the kernel takes the datagrams.
        tick (default: µs since the Unix epoch, strictly increasing), event_number (default: the
        previous one + 1), entropy (default: random) and data_id override the defaults."""
        ptr, nbytes = buffer_address(event)
        return self._send(ptr, nbytes, event_number, data_id, entropy, tick)

    def _send(self, ptr, nbytes, event_number, data_id, entropy, tick) -> int:
        check_event_len(nbytes)
        did = self.data_id if data_id is None else check_uint("data_id", data_id, 16)
        with self._lock:
            if self._closed:
                raise SenderClosed("send() on a closed Sender")
            if self._bucket is not None:
                if event_number is not None or entropy is not None or tick is not None:
                    Numbering.validate(event_number, entropy, tick)  # before booking the bytes
                self._pace(self.layout.udp_bytes(nbytes))
            tick, evn, ent, slot = self._numbering.stamp(time.time_ns() // 1000, event_number, entropy, tick)
            sock, port = self._rotation.next()
            lib.ejlb_tx_send1(self._tx, self._fds[sock], ptr, nbytes, tick, evn, ent, slot, did, port)
        return evn

    def _pace(self, nbytes: int) -> None:
        wait = self._bucket.reserve(nbytes, time.monotonic())
        if wait > MIN_SLEEP_S:
            time.sleep(wait)
            self._bucket.started(time.monotonic())

    def send_many(self, events, *, data_id: int | None = None) -> list[int]:
        """Send several events with automatic numbering in as few system calls as possible;
        returns their RE event numbers. Their datagrams share sendmmsg batches, and with GSO a
        run of equal-length datagrams (small events of one size, fixed-size DAQ frames) shares
        super-datagrams, so many small events cost far less each than through `send`. Same
        buffer rules as `send`; the events of one batch (see SEND_BATCH, BATCH_BYTES; likewise
        each batch the submit thread takes) share the source socket and destination port."""
        if data_id is not None:
            check_uint("data_id", data_id, 16)
        items = []
        for ev in events:
            ptr, nbytes = buffer_address(ev)
            items.append((ptr, check_event_len(nbytes), None, data_id, None, None))
        numbers: list[int] = []
        start, size = 0, 0
        for i, item in enumerate(items):
            if i > start and (i - start == SEND_BATCH or size + item[1] > self._batch_bytes):
                numbers += self._send_batch(items[start:i])
                start, size = i, 0
            size += item[1]
        if start < len(items):
            numbers += self._send_batch(items[start:])
        return numbers

    def _send_batch(self, items) -> list[int]:
        """items: (ptr, nbytes, event_number, data_id, entropy, tick), already validated."""
        evs = ffi.new("ejlb_tx_event[]", len(items))
        numbers = []
        with self._lock:
            if self._closed:
                raise SenderClosed("send() on a closed Sender")
            if self._bucket is not None:
                self._pace(sum(self.layout.udp_bytes(it[1]) for it in items))
            now_us = time.time_ns() // 1000
            sock, port = self._rotation.next()  # one per batch: equal datagrams can share GSO sends
            for ev, (ptr, nbytes, event_number, data_id, entropy, tick) in zip(evs, items):
                ev.tick, ev.event_number, ev.entropy, ev.slot_select = self._numbering.stamp(
                    now_us, event_number, entropy, tick)
                ev.dport = port
                ev.data, ev.len = ptr, nbytes
                ev.data_id = self.data_id if data_id is None else data_id
                numbers.append(ev.event_number)
            lib.ejlb_tx_send(self._tx, self._fds[sock], evs, len(items))
        return numbers

    def submit(self, event, *, event_number: int | None = None, data_id: int | None = None,
               entropy: int | None = None, tick: int | None = None, block: bool = True,
               timeout: float | None = None, callback=None) -> Future:
        """Queue one event for the sending thread; the Future's result is its RE event number.

        The buffer is not copied: do not modify it until the Future is done. When the queue is
        full, block=True waits up to `timeout` seconds (None: forever) and block=False fails at
        once; both raise SendQueueFull. `callback(future)` runs when the event has been sent (or
        failed), on the sending thread. Arguments are checked here and raise here.

        The queue hand-off (a Future, two threads sharing the GIL) costs ~15-20 µs of CPU per
        event, more than `send`; for many small events prefer `send_many`."""
        ptr, nbytes = buffer_address(event)
        check_event_len(nbytes)
        Numbering.validate(event_number, entropy, tick)
        if data_id is not None:
            check_uint("data_id", data_id, 16)
        fut: Future = Future()
        if callback is not None:
            fut.add_done_callback(callback)
        if self._closed or self._closing:
            raise SenderClosed("submit() on a closed Sender")
        if self._worker is None:
            self._start_worker()
        try:
            self._queue.put((fut, ptr, nbytes, event_number, data_id, entropy, tick), block, timeout)
        except queue.Full:
            raise SendQueueFull(f"send queue full ({self._queue.maxsize} events)") from None
        self._last_future = fut
        return fut

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far has been sent (or failed); False on timeout.
        The queue is FIFO, so that is when the latest submitted event is done."""
        fut = self._last_future
        if fut is None:
            return True
        try:
            fut.exception(timeout)
        except FutureTimeout:
            return False
        except CancelledError:
            pass
        return True

    def _start_worker(self) -> None:
        with self._life:  # not the send lock, which a paced send holds while it sleeps
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, name="ejlb-send", daemon=True)
                self._worker.start()

    def _drain(self) -> None:
        """The sending thread: takes whatever is queued (one batch at most) and sends it in one
        native call, so a busy queue costs few system calls and GIL hand-offs per event."""
        while True:
            batch = [self._queue.get()]
            size = batch[0][2] if batch[0] is not None else 0
            while batch[-1] is not None and len(batch) < SEND_BATCH and size < self._batch_bytes:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                if batch[-1] is not None:
                    size += batch[-1][2]
            stop = batch[-1] is None
            live = [item for item in batch if item is not None and item[0].set_running_or_notify_cancel()]
            if live:
                try:
                    numbers = self._send_batch([item[1:] for item in live])
                except BaseException as e:  # noqa: BLE001 - handed to the callers through the futures
                    for item in live:
                        item[0].set_exception(e)
                else:
                    for item, n in zip(live, numbers):
                        item[0].set_result(n)
            if stop:
                return
            batch = live = item = None  # blocking in get() must not keep the last batch's events alive

    # -- sync ---------------------------------------------------------------------------------------
    def _start_sync(self, period: float, ipv6: bool) -> None:
        prefer = 6 if ipv6 else 4
        try:
            addr = self.uri.sync_address(prefer) if prefer in self.uri.sync else self.uri.sync_address()
        except URIError:
            return  # no sync address in the URI (back-to-back use): nothing to send to
        af = socket.AF_INET6 if addr.ip.version == 6 else socket.AF_INET
        self._sync = SyncThread((str(addr.ip), addr.port), af, self.event_src_id, period, self._sync_fields)

    def _sync_fields(self) -> tuple[int, int]:
        # no lock: a send may hold it through a pacing sleep; the numbers read are plain ints
        return self._sync_state.fields(self._numbering, time.time_ns() // 1000, time.monotonic())

    # -- state --------------------------------------------------------------------------------------
    @property
    def source_ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self._socks]

    def stats(self) -> SenderStats:
        st = ffi.new("ejlb_tx_stats *")
        with self._life:  # not the send lock: stats are read while a send runs (atomic counters)
            if self._tx is not None:
                lib.ejlb_tx_get_stats(self._tx, st)
            else:
                st = self._final_stats
        sync = self._sync
        return SenderStats(
            events=st.events, datagrams=st.datagrams, bytes=st.bytes, send_errors=st.send_errors,
            last_errno=st.last_errno, sync_packets=sync.packets if sync else 0, gso=bool(st.gso),
            messages=st.messages, syscalls=st.syscalls, sync_errors=sync.errors if sync else 0, queued=self._queue.qsize(),
        )

    def close(self) -> None:
        """Send what is queued, stop the sync thread, release sockets. Idempotent.

        Called from a `submit` callback (the sending thread) it cannot wait for the queue: events
        still queued then fail with SenderClosed."""
        self._closing = True
        worker = self._worker
        if worker is not None:
            self._worker = None
            self._queue.put(None)
            if worker is not threading.current_thread():
                worker.join()
                self._fail_leftovers()
        if self._sync is not None:
            self._sync.stop()
        lock = getattr(self, "_lock", None)
        with lock if lock is not None else contextlib.nullcontext():
            self._closed = True
            if self._tx is not None:
                with self._life:
                    self._final_stats = ffi.new("ejlb_tx_stats *")
                    lib.ejlb_tx_get_stats(self._tx, self._final_stats)
                    ffi.release(self._tx)
                    self._tx = None
            for s in self._socks:
                s.close()

    def _fail_leftovers(self) -> None:
        """Events a racing submit() queued behind close()'s end marker: fail, never hang."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[0].set_running_or_notify_cancel():
                item[0].set_exception(SenderClosed("the Sender was closed before this event was sent"))

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Sender(data={self.data_address}, mtu={self.layout.mtu}, lb_version={self.lb_version}, "
                f"sockets={len(self._socks)}, closed={self._closed})")

