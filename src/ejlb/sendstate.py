"""The seven counters a worker reports to the control plane in every SendState: one ordered
definition that every other spelling derives from, by name.

    SendStateTotals       the dataclass below: the order, the names, what each one counts
    NAMES                 its field names (events_recv, ...): ReceiverStats, the native core's
                          `ejlb_sendstate` (generated into csrc/ejlb_facts.h), ReassemblyCounters
    COLUMNS               "total_" + name: the control plane's store columns and the client's keys
    PROTO                 the proto fields (totalEventsRecv, ...): SendStateRequest, WorkerStatus
    PROTO_OF              COLUMNS -> PROTO

Pure: imports nothing of ejlb, so the receiver, the control plane and the C generator all can.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class SendStateTotals:
    """The EJFAT SendState totals of one worker, in the proto's order."""

    events_recv: int = field(default=0, metadata={"doc": "events whose first fragment arrived"})
    events_reassembled: int = field(default=0, metadata={"doc": "events completed"})
    events_reassembly_err: int = field(default=0, metadata={"doc": "events given up incomplete (lost + evicted)"})
    events_dequeued: int = field(default=0, metadata={"doc": "events taken by the application"})
    event_enqueue_err: int = field(default=0, metadata={"doc": "completed events dropped because the queue was full"})
    bytes_recv: int = field(default=0, metadata={"doc": "UDP payload bytes, headers included"})
    packets_recv: int = field(default=0, metadata={"doc": "datagrams (GRO buffers counted per segment)"})

    def totals(self) -> dict[str, int]:
        """The seven totals by their NAMES."""
        return {name: getattr(self, name) for name in NAMES}

    def columns(self) -> dict[str, int]:
        """The seven totals by their COLUMNS (the client's `send_state(totals=...)` keys)."""
        return {COLUMN_OF[name]: getattr(self, name) for name in NAMES}


def _camel(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(w.capitalize() for w in rest)


NAMES: tuple[str, ...] = tuple(f.name for f in fields(SendStateTotals))
COLUMN_OF: dict[str, str] = {name: "total_" + name for name in NAMES}
COLUMNS: tuple[str, ...] = tuple(COLUMN_OF.values())
PROTO_OF: dict[str, str] = {column: _camel(column) for column in COLUMNS}
PROTO: tuple[str, ...] = tuple(PROTO_OF.values())
DOCS: dict[str, str] = {f.name: f.metadata["doc"] for f in fields(SendStateTotals)}  # for the C header
