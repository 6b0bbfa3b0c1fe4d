"""The LoadBalancer service core: authentication, permission checks, validation and state changes
for every RPC, independent of gRPC (the servicer is a thin translation shell around it).

Every method takes the caller's raw bearer token first and raises `ejlb.control.errors` exceptions,
whose class is the gRPC status. State lives in memory under one lock and is written through to the
Store; worker reports and sync samples are flushed by the controller tick.
"""
from __future__ import annotations

import collections
import fnmatch
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ejlb.control import audit
from ejlb.control import tokens as tk
from ejlb.control import validate as check
from ejlb.control.calendar import STRATEGIES
from ejlb.control.capacity import URGENT_FILL
from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.epochs import ACCEPTED, RESTARTED, SEED_SRC, Epoch, SyncSample, predict, screen, seed_sample
from ejlb.control.errors import (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                                 ResourceExhausted, Unauthenticated)
from ejlb.control.feedback import initial_weight
from ejlb.control.liveness import FIRST_REPORT_S, REMOVE_S
from ejlb.control.state import TOTALS, Reservation, Session, Token
from ejlb.control.store import Store
from ejlb.control.tokens import Grant, Level, Resource
from ejlb.control.validate import rfc3339 as _rfc3339
from ejlb.dataplane.tables import MAX_MEMBERS, NUM_EPOCHS, SenderLimit
from ejlb.wire import MAX_PORT_RANGE

log = logging.getLogger("ejlb.control")

ROOT_TOKEN_ID = 1
MAX_GRANTS = 64
MAX_CHILD_TOKENS = 4096  # per token: a token holder cannot grow the token table without bound
SERIES_POINTS = 600  # per scalar timeseries: 10 minutes at the default period
IP_FAMILIES = {0: (4, 6), 1: (4,), 2: (6,)}  # IpFamily -> address families handed out


# the counters the capacity meter reads, as indexes into TOTALS: dequeued, offered, lost
METER_TOTALS = tuple(TOTALS.index(k) for k in
                     ("total_events_dequeued", "total_events_reassembled", "total_event_enqueue_err"))
_DEQUEUED, _OFFERED, _LOST = METER_TOTALS

SESSION_SERIES = (  # (name, HistoryRow field, unit, float?)
    ("fillPercent", "fill", "fraction", True),
    ("controlSignal", "control_signal", "", True),
    ("slotsAssigned", "slots", "slots", False),
    ("capacityEstimate", "capacity", "events/s", True),  # capacity balancer: measured, or a lower bound
)


@dataclass
class Series:
    unit: str
    is_float: bool
    points: collections.deque  # (ms, value)


class ControlService:
    sender_limit = SenderLimit()  # the allow-list size of the data plane in use: the Controller sets it

    def _sender_total(self) -> int:
        return sum(len(r.senders) for r in self.reservations.values())

    def __init__(self, config: ControlConfig, store: Store, clock: Callable[[], float] = time.time):
        self.config = config
        self.store = store
        self.clock = clock
        self.lock = threading.RLock()
        self.tokens: dict[int, Token] = {}
        self.token_by_hash: dict[str, Token] = {}
        self.children: dict[int, set[int]] = collections.defaultdict(set)
        self.reservations: dict[int, Reservation] = {}
        self.sessions: dict[int, Session] = {}
        self.series: dict[str, Series] = {}
        self.public_host = config.advertise_host or config.host
        self.public_port = config.port
        self.dataplane_issues: tuple[tuple[str, str], ...] = ()  # (type, message): LB nodes that are down
        # set by the server: open/close the sync listener of a reservation (returns the bound port)
        self.on_reserve: Callable[[Reservation], int] = lambda r: r.sync_port
        self.on_free: Callable[[Reservation], None] = lambda r: None
        self.tables_changed = threading.Event()  # wakes the controller to re-sync tables early
        self.urgent = False  # a worker's queue crossed URGENT_FILL: the controller ticks early
        self.tables_version = 0  # bumped by every change that alters the planned tables
        self._load()

    def mark_tables_changed(self, wake: bool = True) -> None:
        """The one way to say the planned tables changed: bumps `tables_version` (the controller
        re-plans at its next tick) and, with `wake`, wakes it to re-sync the tables now. wake=False
        from inside the tick and for changes that can wait for it (a new session has no slots yet)."""
        self.tables_version += 1
        if wake:
            self.tables_changed.set()

    # -- start-up -------------------------------------------------------------------------------
    def _load(self) -> None:
        snap = self.store.snapshot()
        grants = collections.defaultdict(list)
        for g in snap.grants:
            grants[g["token_id"]].append(Grant(Resource(g["resource"]), g["resource_id"], Level(g["level"])))
        for t in snap.tokens:
            self._index_token(Token(t["id"], t["parent_id"], t["name"], t["hash"], t["created_at"],
                                    tuple(grants[t["id"]])))
        admin_hash = tk.token_hash(self.config.admin_token)
        root = self.tokens.get(ROOT_TOKEN_ID)
        if root is None:
            self._mint(None, "admin", [Grant(Resource.ALL, "", Level.UPDATE)], secret=self.config.admin_token,
                       token_id=ROOT_TOKEN_ID)
        elif root.hash != admin_hash:  # rotated admin token: the old one stops working now
            del self.token_by_hash[root.hash]
            root.hash = admin_hash
            self.token_by_hash[admin_hash] = root
            self.store.set_token_hash(ROOT_TOKEN_ID, admin_hash)
            log.info("admin token rotated")
        instances = {i.lb_id: i for i in self.config.instances}
        for r in snap.reservations:
            inst = instances.get(r["lb"])
            if inst is None:
                log.warning("reservation %s on LB %s: instance no longer configured, dropping", r["id"], r["lb"])
                self.store.delete_reservation(r["id"])
                continue
            self.reservations[r["id"]] = Reservation(
                r["id"], inst, r["name"], r["until"], r["ip_family"], r["strategy"], r["token_id"],
                r["created"], r["sync_port"])
        for s in snap.senders:
            if s["reservation_id"] in self.reservations:
                self.reservations[s["reservation_id"]].senders.add(s["address"])

        for s in snap.sessions:
            res = self.reservations.get(s["reservation_id"])
            if res is None:
                continue
            row = dict(s)
            row["demands"] = [tuple(d) for d in json.loads(row["demands"])]
            row["totals"] = tuple(row.pop(k) for k in TOTALS)
            row["keep_lb_header"] = bool(row["keep_lb_header"])
            row["is_ready"] = bool(row["is_ready"])
            sess = Session(**row)
            res.sessions[sess.id] = self.sessions[sess.id] = sess
        for e in snap.epochs:
            res = self.reservations.get(e["reservation_id"])
            if res is not None:
                cal = tuple(np.frombuffer(e["calendar"], dtype="<u2").tolist())
                res.epochs = (*res.epochs, Epoch(e["seq"], int(e["boundary"]), cal))[-NUM_EPOCHS:]
        for s in snap.samples:
            res = self.reservations.get(s["reservation_id"])
            if res is not None:
                res.samples.append(SyncSample(s["recv_time"], int(s["event_number"]), s["rate"], s["src_id"]))

    def resume(self) -> None:
        """After a restart: workers whose last report is old (the control plane was down) get
        FIRST_REPORT_S to report again before liveness removes them, and no slots until they do."""
        now = self.clock()
        floor = now - (REMOVE_S - FIRST_REPORT_S)
        for s in self.sessions.values():
            if s.live and s.last_report is not None and s.last_report < floor:
                s.last_report, s.is_ready, s.dirty = floor, False, True

    # -- tokens ---------------------------------------------------------------------------------
    def _index_token(self, t: Token) -> None:
        self.tokens[t.id] = t
        self.token_by_hash[t.hash] = t
        if t.parent_id is not None:
            self.children[t.parent_id].add(t.id)

    def _mint(self, parent: Token | None, name: str, grants: Sequence[Grant], secret: str | None = None,
              token_id: int | None = None) -> tuple[Token, str]:
        secret = secret or tk.new_secret()
        h = tk.token_hash(secret)
        created = _rfc3339(time.time())
        tid = self.store.add_token(parent.id if parent else None, name, h, created,
                                   [(int(g.resource), g.resource_id, int(g.level)) for g in grants], token_id)
        t = Token(tid, parent.id if parent else None, name, h, created, tuple(grants))
        self._index_token(t)
        return t, secret

    def _descendants(self, tid: int) -> list[int]:
        out, todo = [], list(self.children.get(tid, ()))
        while todo:
            c = todo.pop()
            out.append(c)
            todo.extend(self.children.get(c, ()))
        return sorted(out)

    def _ancestors(self, tid: int) -> list[int]:
        out, t = [], self.tokens.get(tid)
        while t is not None and t.parent_id is not None:
            out.append(t.parent_id)
            t = self.tokens.get(t.parent_id)
        return out

    def _revoke(self, tid: int | None) -> None:
        if tid is None or tid not in self.tokens or tid == ROOT_TOKEN_ID:
            return
        ids = [tid] + self._descendants(tid)
        for i in ids:
            t = self.tokens.pop(i)
            self.token_by_hash.pop(t.hash, None)
            self.children.pop(i, None)
            if t.parent_id in self.children:
                self.children[t.parent_id].discard(i)
        self.store.delete_tokens(ids)

    def token_id(self, secret: str) -> int | None:
        """Id of a token, None if unknown (for the audit log of refused calls)."""
        t = self.token_by_hash.get(tk.presented_hash(secret))
        return None if t is None else t.id

    def authenticate(self, secret: str) -> Token:
        t = self.token_by_hash.get(tk.presented_hash(secret))
        if t is None:
            raise Unauthenticated("token not recognised (unknown or revoked)")
        return t

    # -- resolution + permission ----------------------------------------------------------------
    @staticmethod
    def _lineage(res: Reservation, sess: Session | None = None) -> tk.Lineage:
        return tk.lineage(res.lb.lb_id, res.id, sess.id if sess else None)

    def _require(self, caller: Token, need: tk.Lineage, level: Level, what: str) -> None:
        if not tk.covers(caller.grants, need, level):
            raise PermissionDenied(f"token {caller.id} ({caller.name!r}) lacks {level.name} on {what}")

    def _reservation(self, caller: Token, lb_id: str, level: Level, field: str = "lbId") -> Reservation:
        rid = check.decimal_id(field, lb_id)
        res = self.reservations.get(rid)
        if res is None:  # only a holder of a covering grant learns that it does not exist
            self._require(caller, tk.lineage(reservation=rid), level, f"reservation {rid}")
            raise NotFound(f"{field}={lb_id!r}: no such reservation")
        self._require(caller, self._lineage(res), level, f"reservation {rid}")
        return res

    def _session(self, caller: Token, lb_id: str, session_id: str, level: Level) -> tuple[Reservation, Session]:
        sid = check.decimal_id("sessionId", session_id)
        rid = check.decimal_id("lbId", lb_id) if lb_id else None  # "" = any (E2SAR sends only sessionId)
        sess = self.sessions.get(sid)
        if rid is not None and sess is not None and sess.reservation_id != rid:
            sess = None
        if sess is None or not sess.live:
            self._require(caller, tk.lineage(session=sid), level, f"session {sid}")
            raise NotFound(f"sessionId={session_id!r}: no such session" + (f" in lbId={lb_id!r}" if lb_id else ""))
        res = self.reservations[sess.reservation_id]
        if caller.id != sess.token_id:  # a session's own token holds UPDATE on it (minted so in register)
            self._require(caller, self._lineage(res, sess), level, f"session {sid}")
        return res, sess

    def _resolve(self, resource: Resource, rid: str) -> tk.Lineage | None:
        """Lineage of any resource a grant may name (for delegation checks)."""
        if resource is Resource.ALL:
            return tk.GLOBAL
        n = int(rid)
        if resource is Resource.LOAD_BALANCER:
            return tk.lineage(lb=n)
        if resource is Resource.RESERVATION:
            res = self.reservations.get(n)
            return self._lineage(res) if res else None
        sess = self.sessions.get(n)
        return self._lineage(self.reservations[sess.reservation_id], sess) if sess else None

    def readable(self, caller: Token) -> list[Reservation]:
        return [r for r in self.reservations.values() if tk.covers(caller.grants, self._lineage(r), Level.READ_ONLY)]

    # -- reservations ---------------------------------------------------------------------------
    def reserve(self, secret: str, name: str, until: float | None, senders: Iterable[str],
                ip_family: int, strategy: str) -> tuple[Reservation, str]:
        with self.lock:
            caller = self.authenticate(secret)
            name = check.name("name", name)
            now = self.clock()
            until = check.until(until, now)
            addrs = check.senders(senders)
            check.sender_count(self.sender_limit, len(set(addrs)), self._sender_total() + len(set(addrs)))
            if ip_family not in IP_FAMILIES:
                raise InvalidArgument(f"ipFamily={ip_family!r}: must be 0 (dual), 1 (IPv4) or 2 (IPv6)")
            if strategy not in STRATEGIES:
                raise InvalidArgument(f"strategy={strategy!r}: must be one of {STRATEGIES}")
            allowed = [i for i in self.config.instances
                       if tk.covers(caller.grants, tk.lineage(lb=i.lb_id), Level.RESERVE)]
            if not allowed:
                raise PermissionDenied(f"token {caller.id} ({caller.name!r}) lacks RESERVE on any load balancer")
            taken = {r.lb.lb_id for r in self.reservations.values()}
            fits = [i for i in allowed if i.lb_id not in taken and self._has_families(i, ip_family)]
            if not fits:
                raise ResourceExhausted(f"no free load balancer with ipFamily={ip_family} "
                                        f"({len(allowed)} allowed, all reserved or lacking that family)")
            inst = fits[0]
            rid = self.store.add_reservation(inst.lb_id, name, until, ip_family, strategy, now, inst.sync_port, addrs)
            res = Reservation(rid, inst, name, until, ip_family, strategy, None, now, inst.sync_port, set(addrs))
            self.reservations[rid] = res
            try:
                res.sync_port = self.on_reserve(res)
            except OSError as e:
                self.reservations.pop(rid)
                self.store.delete_reservation(rid)
                raise ResourceExhausted(f"sync port {inst.sync_port} of LB {inst.lb_id}: {e}") from None
            tok, token_secret = self._mint(caller, f"reservation {rid} ({name})",
                                           [Grant(Resource.RESERVATION, str(rid), Level.UPDATE)])
            res.token_id = tok.id
            res.add_sample(seed_sample(now))
            self.store.update_reservation(rid, token_id=tok.id, sync_port=res.sync_port)
            self.save_samples(res)
            audit.info("reserved lb=%s instance=%s name=%r until=%s by token %s", rid, inst.lb_id, name, until,
                       caller.id)
            self.mark_tables_changed()
            return res, token_secret

    def _has_families(self, inst: InstanceConfig, ip_family: int) -> bool:
        have = {4: inst.ipv4 and self.config.sync_ipv4, 6: inst.ipv6 and self.config.sync_ipv6}
        if ip_family == 0:
            return any(have.values())
        return bool(have[IP_FAMILIES[ip_family][0]])

    def families(self, res: Reservation) -> tuple[int, ...]:
        """Address families a reservation hands out: those asked for that the instance has."""
        return tuple(f for f in IP_FAMILIES[res.ip_family] if self._has_families(res.lb, {4: 1, 6: 2}[f]))

    def get(self, secret: str, lb_id: str) -> Reservation:
        with self.lock:
            return self._reservation(self.authenticate(secret), lb_id, Level.READ_ONLY)

    def free(self, secret: str, lb_id: str) -> None:
        with self.lock:
            caller = self.authenticate(secret)
            res = self._reservation(caller, lb_id, Level.UPDATE)
            self.free_reservation(res, f"by token {caller.id}")

    def free_reservation(self, res: Reservation, why: str = "at expiry") -> None:
        """Free a reservation already resolved (Free, or the controller at expiry); under the lock."""
        self.reservations.pop(res.id, None)
        for sess in res.sessions.values():
            self.sessions.pop(sess.id, None)
            self._revoke(sess.token_id)
        self._drop_series(f"/lb/{res.id}/")
        self._revoke(res.token_id)
        self.store.delete_reservation(res.id)
        self.on_free(res)
        self.mark_tables_changed()
        audit.info("freed lb=%s (instance %s) %s", res.id, res.lb.lb_id, why)

    def reset(self, secret: str, lb_id: str, sync: bool, epochs: bool, senders: bool, workers: bool) -> None:
        with self.lock:
            res = self._reservation(self.authenticate(secret), lb_id, Level.UPDATE)
            now = self.clock()
            if sync:
                res.samples.clear()
                res.sync_suspects = ()
                res.add_sample(seed_sample(now))
            if senders:
                self.store.set_senders(res.id, remove=list(res.senders))
                res.senders.clear()
            if workers:
                for sess in res.live_sessions:
                    self.remove_session(res, sess, now)
            if epochs:
                res.epochs = ()
                self.store.clear_epochs(res.id)
                self.purge_unreferenced(res)
            self.mark_tables_changed()

    def extend(self, secret: str, lb_id: str, until: float | None) -> float | None:
        with self.lock:
            res = self._reservation(self.authenticate(secret), lb_id, Level.UPDATE)
            until = check.until(until, self.clock())
            res.until = until
            self.store.update_reservation(res.id, until=until)
            return until

    def change_senders(self, secret: str, lb_id: str, addresses: Iterable[str], add: bool) -> None:
        with self.lock:
            res = self._reservation(self.authenticate(secret), lb_id, Level.UPDATE)
            addrs = set(check.senders(addresses))
            if add:
                check.sender_count(self.sender_limit, len(res.senders | addrs), self._sender_total() + len(addrs - res.senders))
                self.store.set_senders(res.id, add=sorted(addrs - res.senders))
                res.senders |= addrs
            else:
                self.store.set_senders(res.id, remove=sorted(addrs & res.senders))
                res.senders -= addrs
            self.mark_tables_changed()

    # -- workers --------------------------------------------------------------------------------
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

    # -- sync samples (from the sync listener) --------------------------------------------------
    def accept_sync(self, rid: int, source_ip: str, sample: SyncSample) -> bool:
        """Record a sync sample if its source is an allowed sender of the reservation and it fits the
        line of the samples so far (`epochs.screen`); count every outcome."""
        with self.lock:
            res = self.reservations.get(rid)
            if res is None:
                return False
            if source_ip not in res.senders:
                res.sync_outcomes["rejected_source"] += 1
                return False
            outcome, kept = screen(res.samples, res.sync_suspects, sample)
            res.sync_outcomes[outcome] += 1
            if outcome == RESTARTED:
                res.samples.clear()
                res.samples.extend(kept)
                res.samples_dirty, res.sync_suspects = True, ()
                log.warning("lb=%s: sync from %s restarted the event-number line at %s (%s Hz)",
                            res.id, source_ip, sample.event_number, sample.rate_hz)
                return True
            if outcome != ACCEPTED:
                res.sync_suspects = kept
                log.debug("lb=%s: sync from %s %s: event %s rate %s", res.id, source_ip, outcome,
                          sample.event_number, sample.rate_hz)
                return False
            if any(s.src_id != SEED_SRC for s in res.samples):  # how well did we predict this sample?
                res.prediction_error = sample.event_number - (predict(res.samples, sample.recv_time) or 0)
            res.add_sample(kept[0])
            res.sync_suspects = ()
            return True

    def save_samples(self, res: Reservation) -> None:
        """Write a reservation's sync samples through (at Reserve; the controller's tick when dirty)."""
        self.store.replace_samples(res.id, [(x.recv_time, x.event_number, x.rate_hz, x.src_id) for x in res.samples])
        res.samples_dirty = False

    def commit_epoch(self, res: Reservation) -> None:
        """The controller started an epoch (`res.epochs` advanced): persist the newest, mark the tables
        changed (no wake-up: the tick installs them itself) and forget members no live epoch names."""
        newest = res.epochs[-1]
        self.mark_tables_changed(wake=False)
        self.store.add_epoch(res.id, newest.seq, newest.boundary,
                             np.asarray(newest.calendar, dtype="<u2").tobytes(), NUM_EPOCHS)
        self.purge_unreferenced(res)

    # -- status ---------------------------------------------------------------------------------
    def predicted_event(self, res: Reservation, at: float | None = None) -> int:
        return predict(res.samples, self.clock() if at is None else at) or 0

    def status(self, secret: str, lb_id: str) -> Reservation:
        return self.get(secret, lb_id)

    def overview(self, secret: str) -> list[Reservation]:
        with self.lock:
            return self.readable(self.authenticate(secret))

    def version(self, secret: str) -> None:
        with self.lock:
            self.authenticate(secret)

    # -- timeseries -----------------------------------------------------------------------------
    def record(self, name: str, t: float, value, unit: str, is_float: bool) -> None:
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = Series(unit, is_float, collections.deque(maxlen=SERIES_POINTS))
        s.points.append((int(t * 1000), value))

    def _drop_series(self, prefix: str) -> None:
        for name in [n for n in self.series if n.startswith(prefix)]:
            del self.series[name]

    def timeseries(self, secret: str, selectors: Sequence[str], since: float | None) -> list[tuple[str, Series, list]]:
        """Series matching any selector (shell-style patterns, e.g. '/lb/3/session/*/fillPercent'),
        restricted to reservations the caller may read. Per-session series are cut from the
        per-tick snapshots of each reservation."""
        with self.lock:
            caller = self.authenticate(secret)
            since_ms = int(since * 1000) if since is not None else None
            match = lambda name: not selectors or any(fnmatch.fnmatchcase(name, sel) for sel in selectors)  # noqa: E731
            out = []
            for res in sorted(self.readable(caller), key=lambda r: r.id):
                prefix = f"/lb/{res.id}/"
                for name, s in sorted(self.series.items()):
                    if name.startswith(prefix) and match(name):
                        out.append((name, s, [p for p in s.points if since_ms is None or p[0] >= since_ms]))
                snaps = [h for h in res.history if since_ms is None or h.ms >= since_ms]
                sids = sorted({int(i) for h in snaps for i in h.session_ids})
                for metric, column, unit, is_float in SESSION_SERIES:
                    for sid in sids:
                        name = f"{prefix}session/{sid}/{metric}"
                        if not match(name):
                            continue
                        pts = []
                        for h in snaps:
                            idx = np.flatnonzero(h.session_ids == sid)
                            if idx.size:
                                v = getattr(h, column)[idx[0]]
                                pts.append((h.ms, float(v) if is_float else int(v)))
                        out.append((name, Series(unit, is_float, collections.deque()), pts))
            return out

    # -- token RPCs -----------------------------------------------------------------------------
    def create_token(self, secret: str, name: str, grants: Sequence[tuple[int, str, int]]) -> tuple[Token, str]:
        with self.lock:
            caller = self.authenticate(secret)
            name = check.name("name", name)
            if not grants or len(grants) > MAX_GRANTS:
                raise InvalidArgument(f"permissions: {len(grants)} given, need 1..{MAX_GRANTS}")
            if len(self.children.get(caller.id, ())) >= MAX_CHILD_TOKENS:
                raise ResourceExhausted(f"token {caller.id} already has {MAX_CHILD_TOKENS} child tokens")
            parsed = [Grant.make(*g) for g in grants]
            for g in parsed:
                if not tk.grant_within(g, caller.grants, self._resolve):
                    raise PermissionDenied(f"token {caller.id} ({caller.name!r}) cannot delegate "
                                           f"{g.level.name} on {g.resource.name} {g.resource_id}".rstrip())
            token, secret_out = self._mint(caller, name, parsed)
            audit.info("token created id=%s name=%r permissions=[%s] by token %s", token.id, name,
                       ", ".join(f"{g.level.name} {g.resource.name} {g.resource_id}".rstrip() for g in parsed),
                       caller.id)
            return token, secret_out

    def _target(self, caller: Token, selector: tuple[str, object] | None) -> Token:
        if selector is None or selector == ("id", 0):
            return caller
        kind, value = selector
        t = self.tokens.get(value) if kind == "id" else self.token_by_hash.get(tk.token_hash(str(value)))
        if t is None:
            raise NotFound(f"target {kind}={'<token>' if kind == 'token' else value!r}: no such token")
        return t

    def _require_self_or_ancestor(self, caller: Token, target: Token) -> None:
        if target.id != caller.id and caller.id not in self._ancestors(target.id):
            raise PermissionDenied(f"token {caller.id} is neither token {target.id} nor one of its ancestors")

    def token_details(self, secret: str, selector) -> Token:
        with self.lock:
            caller = self.authenticate(secret)
            target = self._target(caller, selector)
            self._require_self_or_ancestor(caller, target)
            return target

    def child_tokens(self, secret: str, selector) -> list[Token]:
        with self.lock:
            caller = self.authenticate(secret)
            target = self._target(caller, selector)
            self._require_self_or_ancestor(caller, target)
            return [self.tokens[i] for i in self._descendants(target.id)]

    def revoke_token(self, secret: str, selector) -> None:
        with self.lock:
            caller = self.authenticate(secret)
            target = self._target(caller, selector)
            if target.id == ROOT_TOKEN_ID:
                raise FailedPrecondition("the admin token comes from configuration; rotate it there")
            if caller.id not in self._ancestors(target.id) and not tk.covers(caller.grants, tk.GLOBAL, Level.UPDATE):
                raise PermissionDenied(f"token {caller.id} is not an ancestor of token {target.id} "
                                       "and holds no global UPDATE")
            n = len(self._descendants(target.id))
            self._revoke(target.id)
            audit.info("token revoked id=%s name=%r with %s descendants by token %s", target.id, target.name, n,
                       caller.id)
