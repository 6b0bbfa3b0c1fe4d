"""In-memory working state of the control plane (what the store persists), as plain dataclasses."""
from __future__ import annotations

import collections
import ipaddress
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ejlb import sendstate
from ejlb.control.capacity import Estimate, Meter
from ejlb.control.config import InstanceConfig
from ejlb.control.epochs import MAX_SAMPLES, Epoch, SyncSample
from ejlb.control.store import TOTALS  # re-exported: the client's and receiver's counter names
from ejlb.control.tokens import Grant
from ejlb.dataplane.tables import Member

HISTORY_POINTS = 300  # per reservation: 5 minutes at the default 1 s period

TOTALS_PROTO = sendstate.PROTO  # SendState / WorkerStatus field names of the seven counters


class HistoryRow(NamedTuple):
    """One tick's snapshot of a reservation's live workers (for Timeseries), arrays in the same order."""

    ms: int  # control-plane clock, milliseconds
    session_ids: np.ndarray  # int64
    fill: np.ndarray  # float32, 0..1
    control_signal: np.ndarray  # float32
    slots: np.ndarray  # int32: slots in the current calendar
    capacity: np.ndarray  # float32, events/s: measured, or a lower bound


@dataclass
class Token:
    id: int
    parent_id: int | None
    name: str
    hash: str
    created_at: str  # RFC 3339
    grants: tuple[Grant, ...]


@dataclass
class Session:
    id: int
    reservation_id: int
    name: str
    ip: str
    port: int
    port_bits: int
    weight: float
    min_factor: float
    max_factor: float
    keep_lb_header: bool
    demands: list  # [(index, length)]
    member_id: int
    token_id: int | None
    registered_at: float
    last_report: float | None = None
    is_ready: bool = False
    fill: float = 0.0
    control_signal: float = 0.0
    dyn_weight: float = 1000.0
    totals: tuple[int, ...] = (0,) * len(TOTALS)  # in TOTALS order
    removed_at: float | None = None  # set: gone, kept only while a live epoch still names it
    dirty: bool = False  # report fields not yet flushed to the store
    # capacity balancer (not persisted: rebuilt from reports within a few ticks after a restart)
    meter: Meter = field(default_factory=Meter, repr=False, compare=False)
    estimate: Estimate = field(default_factory=Estimate, repr=False, compare=False)
    health: tuple[tuple[str, str], ...] = ()  # (type, message) found by the last tick
    _member: Member | None = field(default=None, repr=False, compare=False)

    @property
    def live(self) -> bool:
        return self.removed_at is None

    @property
    def member(self) -> Member:
        """Member-table entry (cached: the controller asks every tick); an explicit drop once removed."""
        m = self._member
        if m is None or m.drop == self.live:
            m = self._member = Member(ipaddress.ip_address(self.ip), self.port, self.port_bits,
                                      keep_lb_header=self.keep_lb_header, drop=not self.live)
        return m

    def hot_row(self) -> tuple:
        """The store's HOT_SESSION_COLUMNS + id."""
        return (self.last_report, int(self.is_ready), self.fill, self.control_signal, self.dyn_weight,
                *self.totals, self.id)


@dataclass
class Reservation:
    id: int
    lb: InstanceConfig
    name: str
    until: float | None
    ip_family: int
    strategy: str
    token_id: int | None
    created: float
    sync_port: int
    senders: set[str] = field(default_factory=set)
    epochs: tuple[Epoch, ...] = ()
    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_SAMPLES))
    sessions: dict[int, Session] = field(default_factory=dict)
    samples_dirty: bool = False
    # sync datagrams by outcome: accepted, restarted, rejected_source / _rate / _jump (epochs.screen)
    sync_outcomes: collections.Counter = field(default_factory=collections.Counter)
    sync_suspects: tuple = ()  # rejected samples that may be a restarted sender's new line
    prediction_error: int | None = None  # last sync event number minus what we predicted for it
    effective_at: float = 0.0  # when the newest calendar takes effect (its epoch's lead)
    changed_at: float = 0.0  # when the calendar last changed
    # per-tick HistoryRow snapshots for Timeseries, bounded
    history: collections.deque = field(default_factory=lambda: collections.deque(maxlen=HISTORY_POINTS))

    @property
    def sync_accepted(self) -> int:
        return self.sync_outcomes["accepted"] + self.sync_outcomes["restarted"]

    @property
    def sync_rejected(self) -> int:
        return self.sync_outcomes["rejected_source"]

    def add_sample(self, s: SyncSample) -> None:
        self.samples.append(s)
        self.samples_dirty = True

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.live]

    @property
    def calendar(self) -> tuple[int, ...] | None:
        return self.epochs[-1].calendar if self.epochs else None
