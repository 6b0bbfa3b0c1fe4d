"""The control loop: reservations + worker reports → epochs and calendars → data-plane tables.

`plan_tables` is pure (state in, Tables out). `Controller.tick` runs one step for every
reservation: expiry, liveness, weights, slot counts, layout, a new epoch only when the calendar
changes, then a diff against the backend's installed tables and `apply`. `sync_tables` applies the
current state without a new epoch (start-up after a restart, and after Free/Reset/sender changes).
Worker reports are persisted by a writer thread in batches, off the tick's critical path.
"""
from __future__ import annotations

import collections
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ejlb.control import calendar as cal
from ejlb.control import capacity
from ejlb.control import epochs as ep
from ejlb.control import feedback
from ejlb.control.liveness import FIRST_REPORT_S, READY_S, REMOVE_S
from ejlb.control.service import ControlService
from ejlb.control.state import HistoryRow, Reservation
from ejlb.dataplane.tables import MAX_MEMBERS, Backend, SenderLimit, Tables, diff

log = logging.getLogger("ejlb.control.controller")


def plan_tables(reservations: Iterable[Reservation]) -> Tables:
    """The tables every data plane should hold for these reservations."""
    lbs, senders, epochs, calendars, members = {}, set(), {}, {}, {}
    for res in reservations:
        lb = res.lb.lb_id
        lbs[lb] = res.lb.lb_instance()
        senders.update((lb, ipaddress.ip_address(a)) for a in res.senders)
        for eid, rng in ep.ranges(res.epochs).items():
            epochs[(lb, eid)] = rng
        for e in res.epochs:
            calendars[(lb, e.epoch_id)] = e.calendar
        for s in res.sessions.values():
            members[(lb, s.member_id)] = s.member
    return Tables(lbs=lbs, senders=frozenset(senders), epochs=epochs, calendars=calendars, members=members)


@dataclass
class LBStats:
    """Per-reservation figures of the last tick (for metrics and logs)."""

    active_sessions: int = 0
    ready_sessions: int = 0
    boundary: int = 0
    epoch: int = 0
    slots: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fills: np.ndarray = field(default_factory=lambda: np.zeros(0))
    moves: int = 0
    health: collections.Counter = field(default_factory=collections.Counter)  # live workers by issue type


class Controller:
    def __init__(self, service: ControlService, backend: Backend):
        self.service = service
        self.backend = backend
        service.sender_limit = getattr(backend, "sender_limit", SenderLimit())  # enforced at reserve / addSenders
        self.stats: dict[int, LBStats] = {}
        self.last_tick_s = 0.0
        self.epochs_started = 0
        self.slots_moved = 0
        self._apply_lock = threading.Lock()
        self._pending: dict[int, tuple] = {}  # session id -> hot row awaiting the writer
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._planned_version = -1
        self.params = capacity.Params()

    # -- the tick -------------------------------------------------------------------------------
    def tick(self) -> None:
        t0 = time.perf_counter()
        svc = self.service
        with svc.lock:
            now = svc.clock()
            for res in list(svc.reservations.values()):
                if res.until is not None and res.until <= now:
                    log.info("reservation %s expired", res.id)
                    svc.free_reservation(res)
                    continue
                self._step(res, now)
            for rid in [r for r in self.stats if r not in svc.reservations]:
                del self.stats[rid]
            self._collect_reports()
            version = svc.tables_version
            tables = plan_tables(svc.reservations.values()) if version != self._planned_version else None
        if tables is not None:  # steady state: nothing to plan, diff or apply
            self._install(tables, version)
        self.last_tick_s = time.perf_counter() - t0

    def sync_tables(self) -> None:
        with self.service.lock:
            version = self.service.tables_version
            tables = plan_tables(self.service.reservations.values())
        self._install(tables, version)

    def refresh_backend(self) -> None:
        """Let a remote data plane reload nodes that restarted or failed (`NodesBackend.refresh`)."""
        refresh = getattr(self.backend, "refresh", None)
        if refresh is not None:
            with self._apply_lock:
                refresh()
            self.service.dataplane_issues = tuple(
                ("dataplane_node_down", f"LB node {h.address} is not forwarding with the current tables: {h.last_error}")
                for h in self.backend.health() if not h.up)

    def _install(self, tables: Tables, version: int) -> None:
        with self._apply_lock:
            d = diff(self.backend.installed, tables)
            if d:
                self.backend.apply(d)
            self._planned_version = version

    def _step(self, res: Reservation, now: float) -> None:
        svc = self.service
        cfg = svc.config
        live, ready = [], []
        for s in list(res.sessions.values()):  # liveness, inlined (liveness.classify) for 1000s of workers
            if s.removed_at is not None:
                continue
            last = s.last_report
            if (now - last > REMOVE_S) if last is not None else (now - s.registered_at > FIRST_REPORT_S):
                log.info("session %s of lb %s removed: no state report", s.id, res.id)
                svc.remove_session(res, s, now)
                continue
            live.append(s)
            if last is not None and s.is_ready and now - last <= READY_S:
                ready.append(s)
        stats = self.stats.setdefault(res.id, LBStats())
        stats.active_sessions, stats.ready_sessions = len(live), len(ready)
        if ready:
            previous = res.calendar
            if cfg.balancer == "capacity":
                counts = self._capacity_counts(res, live, ready, now)
            else:
                counts = self._signal_counts(ready)
            new = cal.layout({s.member_id: c for s, c in zip(ready, counts)}, previous, strategy=res.strategy,
                             demands={s.member_id: s.demands for s in ready if s.demands},
                             sticky=cfg.sticky_calendar)
            if new != previous:
                stats.moves = cal.moves(previous, new) if previous else 0
                self.slots_moved += stats.moves
                self._start_epoch(res, now, new)
        # one pass over the live workers for history, stats and metrics (no per-field list each)
        rows = np.array([(s.id, s.member_id, s.fill, s.control_signal, capacity.observed(s.estimate),
                          s.last_report is not None) for s in live], dtype=np.float64).reshape(-1, 6)
        member_ids = rows[:, 1].astype(np.int64)
        owned = _owned(res.calendar)
        stats.slots = owned[[s.member_id for s in ready]] if ready else np.zeros(0)
        stats.fills = rows[rows[:, 5] > 0, 2]
        stats.health = collections.Counter(kind for s in live for kind, _ in s.health)
        stats.epoch = res.epochs[-1].seq if res.epochs else 0
        stats.boundary = res.epochs[-1].boundary if res.epochs else 0
        res.history.append(HistoryRow(ms=int(now * 1000), session_ids=rows[:, 0].astype(np.int64),
                                      fill=rows[:, 2].astype(np.float32),
                                      control_signal=rows[:, 3].astype(np.float32),
                                      slots=owned[member_ids].astype(np.int32),
                                      capacity=rows[:, 4].astype(np.float32)))
        svc.record(f"/lb/{res.id}/epoch", now, stats.epoch, "count", False)
        svc.record(f"/lb/{res.id}/predictedEventNumber", now, min(svc.predicted_event(res, now), (1 << 63) - 1),
                   "tick", False)

    def _signal_counts(self, ready: list) -> list[int]:
        """The deployed rule: control signals added to the weights (feedback.py)."""
        weights = feedback.step_arrays([s.dyn_weight for s in ready], [s.control_signal for s in ready],
                                       [s.fill for s in ready], self.service.config.fill_gain)
        for s, w in zip(ready, weights.tolist()):
            if s.dyn_weight != w:
                s.dyn_weight = w
                s.dirty = True
        return cal.slot_counts(weights, [s.min_factor for s in ready], [s.max_factor for s in ready])

    def _capacity_counts(self, res: Reservation, live: list, ready: list, now: float) -> list[int]:
        """Slots in proportion to measured capacity (capacity.py), with hysteresis."""
        p = self.params
        offered = 0.0
        ready_ids = {s.id for s in ready}
        for s in live:  # every meter restarts each tick, ready or not
            w = s.meter.take()
            if w is not None and s.id in ready_ids:
                capacity.observe(s.estimate, w, now, w.start >= res.effective_at, p)
                offered += s.estimate.offered  # observe set it: the window's offered rate
            elif s.id in ready_ids:
                capacity.observe(s.estimate, None, now, False, p)
        workers = [capacity.Worker(s.member_id, s.weight) for s in ready]
        estimates = {s.member_id: s.estimate for s in ready}
        capacity.seed(workers, estimates)
        capacity.discover(workers, estimates, offered, now, p)
        capacity.start_probe(workers, estimates, now, res.changed_at, offered, p)
        shares = capacity.desired(workers, estimates, offered, p)
        weights = [shares[s.member_id] for s in ready]
        counts = cal.slot_counts(weights, [s.min_factor for s in ready], [s.max_factor for s in ready], min_slots=1)
        ests = estimates.values()
        hot = [e.overflowing for e in ests]
        if res.calendar:
            old = _owned(res.calendar)[list(estimates)].tolist()
            if not capacity.significant(old, counts, hot, [bool(e.target) for e in ests], p):
                counts = old
        floored = any(h and s.min_factor > 0 for h, s in zip(hot, ready))
        free = cal.slot_counts(weights, min_slots=1) if floored else counts
        for s, h, c, f in zip(ready, hot, counts, free):  # `free`: the counts without floors, needed only then
            s.health = capacity.health(s.estimate, c, f, s.min_factor) if h else ()
        return counts

    def _start_epoch(self, res: Reservation, now: float, calendar: tuple[int, ...]) -> None:
        prev = res.epochs[-1].boundary if res.epochs else None
        boundary = ep.next_boundary(res.samples, now, prev)
        res.epochs = ep.advance(res.epochs, boundary, calendar)
        res.changed_at, res.effective_at = now, now + ep.LEAD_S
        self.service.commit_epoch(res)
        self.epochs_started += 1
        log.debug("lb %s epoch %s from tick %s", res.id, res.epochs[-1].seq, boundary)

    # -- persistence of worker reports ----------------------------------------------------------
    def _collect_reports(self) -> None:
        """Under the service lock: hand dirty report rows to the writer (or write them now)."""
        svc = self.service
        rows = {}
        for res in svc.reservations.values():
            for s in res.sessions.values():
                if s.dirty:
                    rows[s.id] = s.hot_row()
                    s.dirty = False
            if res.samples_dirty:
                svc.save_samples(res)
        if not rows:
            return
        with self._pending_lock:
            self._pending.update(rows)
        if self._writer is None:
            self.flush()
        else:
            self._wake.set()

    def flush(self) -> None:
        with self._pending_lock:
            rows, self._pending = self._pending, {}
        if rows:  # rows of sessions deleted meanwhile match no row: UPDATE does nothing
            self.service.store.update_sessions_hot(list(rows.values()))

    def start_writer(self) -> None:
        def run():
            while not self._closing:
                self._wake.wait(1.0)
                self._wake.clear()
                try:
                    self.flush()
                except Exception:
                    log.exception("persisting worker reports failed; will retry")
        self._writer = threading.Thread(target=run, name="ejlb-report-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Stop the writer and persist whatever is pending."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            self._writer.join(5)
            self._writer = None
        with self.service.lock:
            self._collect_reports()
        self.flush()


def _owned(calendar) -> np.ndarray:
    """Slots per member id (0..MAX_MEMBERS-1) in a calendar (drop entries not counted)."""
    current = np.asarray(calendar or (), dtype=np.int64)
    return np.bincount(current[current < MAX_MEMBERS], minlength=MAX_MEMBERS)


def spread(values) -> dict[str, float]:
    """min/avg/max/stddev (population) of a sequence (zeros when empty)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return dict.fromkeys(("min", "avg", "max", "stddev"), 0.0)
    return {"min": float(a.min()), "avg": float(a.mean()), "max": float(a.max()), "stddev": float(a.std())}
