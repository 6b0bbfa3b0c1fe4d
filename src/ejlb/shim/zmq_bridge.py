"""Forwards a Receiver's events to a ZeroMQ PUSH socket, zero-copy.

Each event is one multipart message [header, payload]: header = HEADER (big-endian event_number
u64, data_id u16, length u32; 14 bytes), payload = the event buffer itself (sent with copy=False; the
buffer returns to the pool when zmq is done with it). When downstream is slow the PUSH socket
reaches its high-water mark, the forwarder stops draining the receiver's queue, and the queue fill
that the receiver reports to the control plane rises: back-pressure becomes fewer slots.
"""
from __future__ import annotations

import logging
import struct
import threading

import zmq

from ejlb.shim.events import ReceiverClosed

log = logging.getLogger(__name__)

HEADER = struct.Struct(">QHI")


def decode_header(frame) -> tuple[int, int, int]:
    """(event_number, data_id, length) of a forwarded header frame."""
    buf = memoryview(frame)
    if buf.nbytes != HEADER.size:
        raise ValueError(f"zmq header length={buf.nbytes}: expected {HEADER.size} bytes")
    return HEADER.unpack(buf)


class ZmqForwarder:
    """A thread that moves events from `receiver.recv` to a PUSH socket (endpoint or socket)."""

    def __init__(self, receiver, target, *, hwm: int = 16, context: zmq.Context | None = None):
        self.receiver = receiver
        self.sent = 0
        self._stop = threading.Event()
        if isinstance(target, zmq.Socket):
            self.socket, self._own = target, False
        else:
            self.socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
            self._own = True
            self.socket.setsockopt(zmq.SNDHWM, hwm)
            self.socket.setsockopt(zmq.LINGER, 0)
            try:
                self.socket.connect(str(target))
            except zmq.ZMQError as e:
                self.socket.close()
                raise ValueError(f"zmq_push={target!r}: {e}") from None
        self._thread = threading.Thread(target=self._run, name="ejlb-zmq", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLOUT)
        while not self._stop.is_set():
            try:
                ev = self.receiver.recv(timeout=0.1)
            except TimeoutError:
                continue
            except ReceiverClosed:
                return
            frames = [HEADER.pack(ev.event_number, ev.data_id, len(ev)), ev.payload]
            while not self._stop.is_set():
                if poller.poll(100):  # wait for room below the HWM, but stay stoppable
                    try:
                        self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                        self.sent += 1
                        break
                    except zmq.Again:
                        continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._own:
            self.socket.close(linger=0)
