"""The LoadBalancer service core: authentication, permission checks, validation and state changes
for every RPC, independent of gRPC (the servicer is a thin translation shell around it).

Every method takes the caller's raw bearer token first and raises `ejlb.control.errors` exceptions,
whose class is the gRPC status. State lives in memory under one lock and is written through to the
Store; worker reports and sync samples are flushed by the controller tick.

The handlers are split by resource, as mixins of the one `ControlService` (one state, one lock):
reservations.py (with sync samples and epochs), sessions.py, token_handlers.py, timeseries.py.
This module holds the state, the reload from the store, and the authentication and resolution
helpers they all use.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Callable

import numpy as np

from ejlb.control import tokens as tk
from ejlb.control import validate as check
from ejlb.control.config import ControlConfig
from ejlb.control.epochs import Epoch, SyncSample
from ejlb.control.errors import NotFound, PermissionDenied, Unauthenticated
from ejlb.control.liveness import FIRST_REPORT_S, REMOVE_S
from ejlb.control.reservations import ReservationHandlers
from ejlb.control.sessions import SessionHandlers
from ejlb.control.state import TOTALS, Reservation, Session, Token
from ejlb.control.store import Store
from ejlb.control.timeseries import Series, TimeseriesHandlers
from ejlb.control.token_handlers import ROOT_TOKEN_ID, TokenHandlers
from ejlb.control.tokens import Grant, Level, Resource
from ejlb.dataplane.tables import NUM_EPOCHS

log = logging.getLogger("ejlb.control")


class ControlService(ReservationHandlers, SessionHandlers, TokenHandlers, TimeseriesHandlers):
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

    # -- authentication ---------------------------------------------------------------------------
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

    def version(self, secret: str) -> None:
        with self.lock:
            self.authenticate(secret)
