"""The control loop: reservations + worker reports → epochs and calendars → data-plane tables.

`plan_tables` is pure (state in, Tables out). `Controller.tick` runs one step for every
reservation: expiry, liveness, weights, slot counts, layout, a new epoch only when the calendar
changes, then diff against the backend's installed tables and `apply`. `sync_tables` applies the
current state without a new epoch (start-up after a restart, and after Free/Reset/senders changes).
"""
from __future__ import annotations

import ipaddress
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ejlb.control import calendar as cal
from ejlb.control import epochs as ep
from ejlb.control import feedback
from ejlb.control.liveness import Liveness, classify
from ejlb.control.service import ControlService
from ejlb.control.state import Reservation
from ejlb.dataplane.tables import NUM_EPOCHS, Backend, Member, Tables, diff

log = logging.getLogger("ejlb.control.controller")


def plan_tables(reservations: Iterable[Reservation]) -> Tables:
    """The tables every data plane should hold for these reservations."""
    lbs, senders, epochs, calendars, members = {}, set(), {}, {}, {}
    for res in reservations:
        lb = res.lb.lb_id
        lbs[lb] = res.lb.lb_instance()
        senders |= {(lb, ipaddress.ip_address(a)) for a in res.senders}
        for eid, rng in ep.ranges(res.epochs).items():
            epochs[(lb, eid)] = rng
        for e in res.epochs:
            calendars[(lb, e.epoch_id)] = e.calendar
        for s in res.sessions.values():
            members[(lb, s.member_id)] = Member(ipaddress.ip_address(s.ip), s.port, s.port_bits,
                                                keep_lb_header=s.keep_lb_header, drop=not s.live)
    return Tables(lbs=lbs, senders=frozenset(senders), epochs=epochs, calendars=calendars, members=members)


@dataclass
class LBStats:
    """Per-reservation figures of the last tick (for metrics and logs)."""

    active_sessions: int = 0
    ready_sessions: int = 0
    boundary: int = 0
    epoch: int = 0
    slots: list[int] = field(default_factory=list)
    fills: list[float] = field(default_factory=list)
    moves: int = 0


class Controller:
    def __init__(self, service: ControlService, backend: Backend):
        self.service = service
        self.backend = backend
        self.stats: dict[int, LBStats] = {}
        self.last_tick_s = 0.0
        self.epochs_started = 0
        self.slots_moved = 0
        self._apply_lock = threading.Lock()

    def tick(self) -> None:
        t0 = time.perf_counter()
        svc = self.service
        with svc.lock:
            now = svc.clock()
            for res in list(svc.reservations.values()):
                if res.until is not None and res.until <= now:
                    log.info("reservation %s expired", res.id)
                    svc._free(res)
                    continue
                self._step(res, now)
            self._flush()
            tables = plan_tables(svc.reservations.values())
        self._install(tables)
        self.last_tick_s = time.perf_counter() - t0

    def sync_tables(self) -> None:
        with self.service.lock:
            tables = plan_tables(self.service.reservations.values())
        self._install(tables)

    def _install(self, tables: Tables) -> None:
        with self._apply_lock:
            d = diff(self.backend.installed, tables)
            if d:
                self.backend.apply(d)

    def _step(self, res: Reservation, now: float) -> None:
        svc = self.service
        cfg = svc.config
        for s in res.live_sessions:
            if classify(now, s.registered_at, s.last_report, s.is_ready) is Liveness.REMOVED:
                log.info("session %s of lb %s removed: no state report", s.id, res.id)
                svc._remove_session(res, s, now)
        live = res.live_sessions
        ready = [s for s in live if classify(now, s.registered_at, s.last_report, s.is_ready) is Liveness.READY]
        stats = self.stats.setdefault(res.id, LBStats())
        stats.active_sessions, stats.ready_sessions = len(live), len(ready)
        if ready:
            weights = feedback.step([feedback.Report(s.dyn_weight, s.control_signal, s.fill) for s in ready],
                                    cfg.fill_gain)
            for s, w in zip(ready, weights):
                s.dyn_weight = w
                s.dirty = True
            counts = cal.slot_counts(weights, [s.min_factor for s in ready], [s.max_factor for s in ready])
            by_member = {s.member_id: c for s, c in zip(ready, counts)}
            previous = res.calendar
            new = cal.layout(by_member, previous, strategy=res.strategy,
                             demands={s.member_id: s.demands for s in ready if s.demands},
                             sticky=cfg.sticky_calendar)
            if new != previous:
                self._start_epoch(res, now, new)
                stats.moves = cal.moves(previous, new) if previous else 0
                self.slots_moved += stats.moves
        current = res.calendar or ()
        owned = np.bincount(np.asarray([m for m in current if m < 1024], dtype=np.int64), minlength=1024)
        stats.slots = [int(owned[s.member_id]) for s in ready]
        stats.fills = [s.fill for s in live if s.last_report is not None]
        stats.epoch = res.epochs[-1].seq if res.epochs else 0
        stats.boundary = res.epochs[-1].boundary if res.epochs else 0
        ms = now
        svc.record(f"/lb/{res.id}/epoch", ms, stats.epoch, "count", False)
        svc.record(f"/lb/{res.id}/predictedEventNumber", ms, min(svc.predicted_event(res, now), (1 << 63) - 1),
                   "tick", False)
        for s in live:
            base = f"/lb/{res.id}/session/{s.id}/"
            svc.record(base + "fillPercent", ms, s.fill, "fraction", True)
            svc.record(base + "controlSignal", ms, s.control_signal, "", True)
            svc.record(base + "slotsAssigned", ms, int(owned[s.member_id]), "slots", False)

    def _start_epoch(self, res: Reservation, now: float, calendar: tuple[int, ...]) -> None:
        prev = res.epochs[-1].boundary if res.epochs else None
        boundary = ep.next_boundary(res.samples, now, prev)
        res.epochs = ep.advance(res.epochs, boundary, calendar)
        newest = res.epochs[-1]
        self.service.store.add_epoch(res.id, newest.seq, boundary,
                                     np.asarray(calendar, dtype="<u2").tobytes(), NUM_EPOCHS)
        self.service._purge_unreferenced(res)
        self.epochs_started += 1
        log.debug("lb %s epoch %s from tick %s", res.id, newest.seq, boundary)

    def _flush(self) -> None:
        svc = self.service
        rows = []
        for res in svc.reservations.values():
            for s in res.sessions.values():
                if s.dirty:
                    rows.append({"id": s.id, "last_report": s.last_report, "is_ready": s.is_ready, "fill": s.fill,
                                 "control_signal": s.control_signal, "dyn_weight": s.dyn_weight, "totals": s.totals})
                    s.dirty = False
            if res.samples_dirty:
                svc.store.replace_samples(res.id, [(x.recv_time, x.event_number, x.rate_hz, x.src_id)
                                                   for x in res.samples])
                res.samples_dirty = False
        if rows:
            svc.store.update_sessions_hot(rows)


def spread(values: list[float]) -> dict[str, float]:
    """min/avg/max/stddev of a list (zeros when empty)."""
    if not values:
        return dict.fromkeys(("min", "avg", "max", "stddev"), 0.0)
    return {"min": float(min(values)), "avg": float(statistics.fmean(values)), "max": float(max(values)),
            "stddev": float(statistics.pstdev(values))}
