"""The shim's vocabulary (as aioquic's quic/events.py): what a Receiver hands out and the errors that
end a Sender's or Receiver's life. Small values that every layer imports and that import nothing of
the shim back, so the receiver, the reassembler and the ZeroMQ bridge need not import each other.
"""
from __future__ import annotations

from dataclasses import dataclass

from ejlb.errors import Closed

LOST_TIMEOUT = "timeout"
LOST_EVICTED = "evicted"


class Event:
    """One reassembled event. `payload` is a writable memoryview over the event's own buffer (no
    copy); the buffer returns to the pool when the last view of it (memoryview, numpy array, zmq
    frame) is gone."""

    __slots__ = ("event_number", "data_id", "payload")

    def __init__(self, event_number: int, data_id: int, payload: memoryview):
        self.event_number = event_number
        self.data_id = data_id
        self.payload = payload

    def __len__(self) -> int:
        return self.payload.nbytes

    def tobytes(self) -> bytes:
        return self.payload.tobytes()

    def __repr__(self) -> str:
        return f"Event(event_number={self.event_number}, data_id={self.data_id}, len={len(self)})"


@dataclass(frozen=True)
class LostEvent:
    """An event given up incomplete: what had arrived of it, and why (timeout or evicted)."""

    event_number: int
    data_id: int
    fragments: int
    bytes: int
    length: int = 0
    reason: str = LOST_TIMEOUT


class ReceiverClosed(Closed):
    """recv() on a closed receiver whose queue is drained."""


class SenderClosed(Closed, RuntimeError):
    """The Sender was closed; it sends nothing more."""
