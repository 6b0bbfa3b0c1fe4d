"""Reservation handlers of the LoadBalancer service: Reserve, Free, Reset, Extend, Add/RemoveSenders,
Get/Status/Overview, and each reservation's sync samples and epochs.

Mixed into `ControlService` (service.py): the methods use its state, store, clock and lock,
and its authentication and resolution helpers; RPC methods take the caller's bearer token first.
"""
from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

from ejlb.control import audit
from ejlb.control import tokens as tk
from ejlb.control import validate as check
from ejlb.control.calendar import STRATEGIES
from ejlb.control.config import InstanceConfig
from ejlb.control.epochs import ACCEPTED, RESTARTED, SEED_SRC, SyncSample, predict, screen, seed_sample
from ejlb.control.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from ejlb.control.state import Reservation
from ejlb.control.tokens import Grant, Level, Resource
from ejlb.dataplane.tables import NUM_EPOCHS, SenderLimit

log = logging.getLogger("ejlb.control")

IP_FAMILIES = {0: (4, 6), 1: (4,), 2: (6,)}  # IpFamily -> address families handed out


class ReservationHandlers:
    sender_limit = SenderLimit()  # the allow-list size of the data plane in use: the Controller sets it

    def _sender_total(self) -> int:
        return sum(len(r.senders) for r in self.reservations.values())

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
