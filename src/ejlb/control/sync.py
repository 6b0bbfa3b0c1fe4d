"""Sync listener: one UDP socket per address family per reservation, all served by one thread.

Accepts only datagrams that decode as a Sync header (exactly 28 bytes, "LC", version 2) and come
from one of the reservation's allowed senders: an arbitrary host cannot shift epoch boundaries.
Reads are bounded per wake-up and samples per reservation are capped, so a flood costs CPU time
but never memory.
"""
from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Callable

from ejlb.control.epochs import SyncSample
from ejlb.wire import SYNC_HEADER_LEN, SyncHeader, WireError

log = logging.getLogger("ejlb.control.sync")

BATCH = 64  # datagrams drained per socket per wake-up


class SyncListener:
    def __init__(self, accept: Callable[[int, str, SyncSample], bool], clock: Callable[[], float] = time.time):
        self._accept = accept
        self.clock = clock
        self._sel = selectors.DefaultSelector()
        self._socks: dict[int, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = False
        self._thread: threading.Thread | None = None
        self.malformed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ejlb-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._sel is None:
            return
        self._stop = True
        self._wake_w.send(b"x")
        if self._thread:
            self._thread.join(5)
        for rid in list(self._socks):
            self.close(rid)
        self._sel.close()
        self._sel = None
        self._wake_r.close()
        self._wake_w.close()

    def open(self, rid: int, addresses: dict[int, str], port: int) -> int:
        """Bind `port` (0 = ephemeral, the same number for every family) on each family's address;
        returns the port."""
        for attempt in range(20):
            socks, bound = [], port
            try:
                for family, ip in sorted(addresses.items()):
                    s = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
                    socks.append(s)
                    if family == 6:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind((ip, bound))
                    bound = s.getsockname()[1]
                    s.setblocking(False)
                break
            except OSError:
                for s in socks:
                    s.close()
                if port or attempt == 19:  # a configured port is not ours to change
                    raise
        port = bound
        with self._lock:
            self._socks[rid] = socks
            for s in socks:
                self._sel.register(s, selectors.EVENT_READ, rid)
        self._wake_w.send(b"x")
        return port

    def close(self, rid: int) -> None:
        with self._lock:
            for s in self._socks.pop(rid, []):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._sel.select(timeout=1.0)
            except (OSError, ValueError):
                continue
            for key, _ in events:
                if key.data is None:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    continue
                self._drain(key.fileobj, key.data)

    def _drain(self, sock: socket.socket, rid: int) -> None:
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(SYNC_HEADER_LEN + 1)  # +1: longer datagrams show as 29 bytes
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # closed under us by close()
                return
            try:
                h = SyncHeader.decode(data)
            except WireError as e:
                self.malformed += 1
                log.debug("sync from %s dropped: %s", addr[0], e)
                continue
            src = addr[0].split("%")[0]
            self._accept(rid, src, SyncSample(self.clock(), h.event_number, h.avg_event_rate_hz, h.event_src_id))
