"""Session (worker) handlers of the LoadBalancer service: Register, Deregister, SendState,
SetSlotDemands, and the soft removal the controller's liveness shares.

Mixed into `ControlService` (service.py): the methods use its state, store, clock and lock,
and its authentication and resolution helpers; RPC methods take the caller's bearer token first.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ejlb.control import audit
from ejlb.control import validate as check
from ejlb.control.capacity import URGENT_FILL
from ejlb.control.errors import InvalidArgument, NotFound, ResourceExhausted
from ejlb.control.feedback import initial_weight
from ejlb.control.state import TOTALS, Reservation, Session
from ejlb.control.tokens import Grant, Level, Resource
from ejlb.dataplane.tables import MAX_MEMBERS
from ejlb.wire import MAX_PORT_RANGE

# the counters the capacity meter reads, as indexes into TOTALS: dequeued, offered, lost
METER_TOTALS = tuple(TOTALS.index(k) for k in
                     ("total_events_dequeued", "total_events_reassembled", "total_event_enqueue_err"))
_DEQUEUED, _OFFERED, _LOST = METER_TOTALS


class SessionHandlers:
    def register(self, secret: str, lb_id: str, name: str, weight: float, ip: str, port: int, port_range: int,
                 min_factor: float, max_factor: float, keep_lb_header: bool,
                 demands: Iterable[tuple[int, int]] = ()) -> tuple[Session, str]:
        with self.lock:
            caller = self.authenticate(secret)
            res = self._reservation(caller, lb_id, Level.REGISTER)
            name = check.name("name", name)
            addr = check.worker_address(ip, self.config.allow_private_workers)
            if not 0 <= port_range <= MAX_PORT_RANGE:
                raise InvalidArgument(f"portRange={port_range!r}: must be 0..{MAX_PORT_RANGE}")
            if not 1 <= port <= 0xFFFF or port + (1 << port_range) - 1 > 0xFFFF:
                raise InvalidArgument(f"udpPort={port!r}: port .. port + 2^{port_range} - 1 must lie in 1..65535")
            weight = check.finite("weight", weight, 0.0) or 1.0  # proto3 default 0 = unset
            min_factor = check.finite("minFactor", min_factor, 0.0)
            max_factor = check.finite("maxFactor", max_factor, 0.0)
            if max_factor and max_factor < min_factor:
                raise InvalidArgument(f"maxFactor={max_factor}: below minFactor={min_factor} (0 = no maximum)")
            demands = check.demands("slotDemands", demands)
            used = {s.member_id for s in res.sessions.values()}
            member = next((m for m in range(MAX_MEMBERS) if m not in used), None)
            if member is None:
                raise ResourceExhausted(f"lbId={lb_id}: all {MAX_MEMBERS} member ids in use")
            now = self.clock()
            sess = Session(0, res.id, name, str(addr), port, port_range, weight, min_factor, max_factor,
                           bool(keep_lb_header), demands, member, None, now, dyn_weight=initial_weight(weight))
            row = {k: getattr(sess, k) for k in
                   ("reservation_id", "name", "ip", "port", "port_bits", "weight", "min_factor", "max_factor",
                    "keep_lb_header", "demands", "member_id", "token_id", "registered_at", "last_report",
                    "is_ready", "fill", "control_signal", "dyn_weight", "removed_at")}
            sess.id = self.store.add_session(row)
            tok, token_secret = self._mint(caller, f"session {sess.id} ({name})",
                                           [Grant(Resource.SESSION, str(sess.id), Level.UPDATE)])
            sess.token_id = tok.id
            self.store.update_session(sess.id, token_id=tok.id)
            res.sessions[sess.id] = self.sessions[sess.id] = sess
            self.mark_tables_changed(wake=False)
            audit.info("registered session=%s lb=%s %s:%s/%s member=%s token=%s by token %s", sess.id, res.id, addr,
                       port, port_range, member, tok.id, caller.id)
            return sess, token_secret

    def deregister(self, secret: str, lb_id: str, session_id: str) -> None:
        with self.lock:
            caller = self.authenticate(secret)
            res, sess = self._session(caller, lb_id, session_id, Level.UPDATE)
            self.remove_session(res, sess, self.clock())
            self.mark_tables_changed()
            audit.info("deregistered session=%s lb=%s (%s:%s) by token %s", sess.id, res.id, sess.ip, sess.port,
                       caller.id)

    def remove_session(self, res: Reservation, sess: Session, now: float) -> None:
        """Soft removal: the member keeps its id (as an explicit drop) while a live epoch names it.
        Deregister, Reset and the controller's liveness; under the lock."""
        sess.removed_at = now
        self.mark_tables_changed(wake=False)
        self._revoke(sess.token_id)
        sess.token_id = None
        self.store.update_session(sess.id, removed_at=now, token_id=None)
        self.purge_unreferenced(res)

    def purge_unreferenced(self, res: Reservation) -> None:
        """Forget removed sessions whose member id no live epoch names any more."""
        referenced = {m for e in res.epochs for m in e.calendar}
        gone = [s for s in res.sessions.values() if not s.live and s.member_id not in referenced]
        for s in gone:
            del res.sessions[s.id]
            self.sessions.pop(s.id, None)
        if gone:
            self.mark_tables_changed(wake=False)
            self.store.delete_sessions([s.id for s in gone])

    def send_state(self, secret: str, lb_id: str, session_id: str, fill: float, control_signal: float,
                   is_ready: bool, totals: Mapping[str, int] | Sequence[int]) -> None:
        """A worker's report: kept in memory (the controller's tick reads it and hands it to the
        writer thread: the store sees it within a tick). `totals` by name, or all seven in TOTALS order."""
        with self.lock:
            _, sess = self._session(self.authenticate(secret), lb_id, session_id, Level.UPDATE)
            fill = check.finite("fillPercent", fill, 0.0, 1.0)  # all checked before any is applied
            control_signal = check.control_signal(control_signal)
            counters = check.totals(totals)
            if sess.fill < URGENT_FILL <= fill and self.config.balancer == "capacity":  # tick now
                self.urgent = True
                self.tables_changed.set()
            sess.fill, sess.control_signal, sess.totals = fill, control_signal, counters
            sess.is_ready = bool(is_ready)
            sess.last_report = now = self.clock()  # our clock: liveness never trusts the worker's
            sess.meter.observe(now, fill, counters[_DEQUEUED], counters[_OFFERED], counters[_LOST])
            sess.dirty = True

    def set_slot_demands(self, secret: str, lb_id: str, constraints: Iterable[tuple[str, Iterable[tuple[int, int]]]]) -> None:
        with self.lock:
            res = self._reservation(self.authenticate(secret), lb_id, Level.UPDATE)
            updates = []
            for session_id, ranges in constraints:
                sid = check.decimal_id("slotConstraints.sessionId", session_id)
                sess = res.sessions.get(sid)
                if sess is None or not sess.live:
                    raise NotFound(f"slotConstraints.sessionId={session_id!r}: no such session in lbId={lb_id}")
                updates.append((sess, check.demands(f"slotConstraints[{sid}].slots", ranges)))
            for sess, demands in updates:
                sess.demands = demands
                self.store.update_session(sess.id, demands=demands)
