"""A deterministic simulator of workers driving the real control plane (no sockets, no threads).

The control plane is the real `ControlService` + `Controller` on an in-memory store and the memory
backend, run on a simulated clock. Workers are fluid queues: every `dt` a worker is offered the
stream's events in proportion to the slots it owns in the calendar *in effect* (the newest epoch
whose boundary the simulated event counter has passed, so the epoch lead is real), serves up to
its capacity × dt, and drops what overflows its queue. Arrivals are fluid, or Poisson with a seed
(`Scenario.poisson`) so that queues blip as real ones do. Each worker reports fill, control signal
(its own PID, as `ejlb.Receiver` does) and the SendState totals every `report_period`; the
controller ticks every `period`. Speed changes, joins and leaves are scheduled events.

    result = simulate(Scenario(workers=[WorkerSpec(500), WorkerSpec(250), WorkerSpec(125)], load=0.75))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.controller import Controller
from ejlb.control.server import MIN_TICK_GAP_S
from ejlb.control.service import ControlService
from ejlb.control.store import Store
from ejlb.dataplane.tables import MemoryBackend
from ejlb.sendstate import SendStateTotals
from ejlb.shim.pid import PID
from ejlb.wire import CALENDAR_SLOTS, TICK_RATE_HZ

ADMIN = "sim-admin-token-0000"


@dataclass(frozen=True)
class WorkerSpec:
    capacity: float  # events/s
    weight: float = 1.0  # registered
    queue: int = 150  # events
    min_factor: float = 0.0
    max_factor: float = 0.0
    pid: tuple = (0.0, 0.0, 0.0)  # the worker's control signal; zero gains = E2SAR's default
    join: float = 0.0  # s
    leave: float = math.inf
    speed: tuple[tuple[float, float], ...] = ()  # (time, new capacity)

    def capacity_at(self, t: float) -> float:
        c = self.capacity
        for at, value in self.speed:
            if t >= at:
                c = value
        return c


@dataclass(frozen=True)
class Scenario:
    workers: Sequence[WorkerSpec]
    load: float = 0.75  # offered events/s as a fraction of the initial total capacity
    rate: float | None = None  # or an absolute event rate
    duration: float = 60.0
    balancer: str = "capacity"
    period: float = 1.0  # controller tick
    report_period: float = 0.1
    dt: float = 0.05
    poisson: int | None = None  # seed: Poisson arrivals (queues blip as real ones do); None: fluid

    @property
    def event_rate(self) -> float:
        return self.rate if self.rate is not None else self.load * sum(w.capacity for w in self.workers)


@dataclass
class Trace:
    """Sampled every controller tick; arrays are [tick, worker] (NaN while a worker is absent)."""

    t: list = field(default_factory=list)
    capacity_share: list = field(default_factory=list)
    slot_share: list = field(default_factory=list)  # of the calendar in effect
    fill: list = field(default_factory=list)
    lost: list = field(default_factory=list)  # cumulative events dropped at the queue
    epoch: list = field(default_factory=list)
    moves: list = field(default_factory=list)  # slots moved by the newest calendar (cumulative)
    health: list = field(default_factory=list)  # per tick: per worker, the health issue types

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64) for k in
                ("t", "capacity_share", "slot_share", "fill", "lost", "epoch", "moves")}


@dataclass
class _Worker:
    spec: WorkerSpec
    pid: PID
    session: str = ""
    token: str = ""
    member: int = -1
    queue: float = 0.0
    offered: float = 0.0
    dequeued: float = 0.0
    lost: float = 0.0
    gone: bool = False


def simulate(sc: Scenario) -> Trace:
    clock = [1_000_000.0]
    cfg = ControlConfig(port=0, admin_token=ADMIN, backend="memory", controller_period=sc.period,
                        balancer=sc.balancer,
                        instances=(InstanceConfig(lb_id=0, ipv4="127.0.0.1", ipv6=None),))
    svc = ControlService(cfg, Store(":memory:"), clock=lambda: clock[0])
    ctl = Controller(svc, MemoryBackend())
    res, res_token = svc.reserve(ADMIN, "sim", None, [], 1, "")
    lb = str(res.id)
    workers = [_Worker(w, PID(w.pid)) for w in sc.workers]
    trace = Trace()
    t0 = clock[0]
    steps = int(round(sc.duration / sc.dt))
    report_every = max(1, int(round(sc.report_period / sc.dt)))
    next_tick, last_tick = sc.period, -math.inf
    rate = sc.event_rate
    rng = np.random.default_rng(sc.poisson) if sc.poisson is not None else None
    for k in range(steps + 1):
        t = k * sc.dt
        clock[0] = t0 + t
        for i, w in enumerate(workers):  # joins and leaves
            if not w.session and not w.gone and t >= w.spec.join:
                s, w.token = svc.register(res_token, lb, f"w{i}", w.spec.weight, f"10.0.0.{i + 1}", 10000, 0,
                                          w.spec.min_factor, w.spec.max_factor, False)
                w.session, w.member = str(s.id), s.member_id
            if w.session and not w.gone and t >= w.spec.leave:
                svc.deregister(w.token, lb, w.session)
                w.gone = True
        calendar = _in_effect(res, clock[0])
        for w in workers:
            if not w.session or w.gone:
                continue
            share = np.count_nonzero(calendar == w.member) / CALENDAR_SLOTS if calendar is not None else 0.0
            arrive = rate * share * sc.dt
            if rng is not None:
                arrive = float(rng.poisson(arrive))
            serve = min(w.queue + arrive, w.spec.capacity_at(t) * sc.dt)
            w.offered += arrive
            w.dequeued += serve
            w.queue = max(0.0, w.queue + arrive - serve)  # no float dust below empty
            if w.queue > w.spec.queue:
                w.lost += w.queue - w.spec.queue
                w.queue = float(w.spec.queue)
        if k % report_every == 0:
            for w in workers:
                if w.session and not w.gone:
                    fill = w.queue / w.spec.queue
                    signal = w.pid.update(fill, sc.report_period)
                    totals = SendStateTotals(events_recv=int(w.offered), events_reassembled=int(w.offered),
                                             events_dequeued=int(w.dequeued), event_enqueue_err=int(w.lost)).columns()
                    svc.send_state(w.token, lb, w.session, fill, signal, True, totals)
        urgent = svc.urgent and t - last_tick >= MIN_TICK_GAP_S - 1e-9  # as ControlPlane._run does
        if urgent or t >= next_tick - 1e-9:
            svc.urgent = False
            next_tick = t + sc.period if urgent else next_tick + sc.period
            last_tick = t
            ctl.tick()
            present = [bool(w.session) and not w.gone for w in workers]
            caps = np.array([w.spec.capacity_at(t) if p else 0.0 for w, p in zip(workers, present)])
            calendar = _in_effect(res, clock[0])
            nan = np.where(present, 1.0, np.nan)
            trace.t.append(t)
            trace.capacity_share.append(caps / caps.sum() * nan if caps.sum() else caps * nan)
            trace.slot_share.append(np.array([np.count_nonzero(calendar == w.member) / CALENDAR_SLOTS
                                              if calendar is not None else 0.0 for w in workers]) * nan)
            trace.fill.append(np.array([w.queue / w.spec.queue for w in workers]) * nan)
            trace.lost.append(np.array([w.lost for w in workers]))
            trace.epoch.append(res.epochs[-1].seq if res.epochs else 0)
            trace.moves.append(ctl.slots_moved)
            sessions = {str(s.id): s for s in res.sessions.values()}
            trace.health.append([tuple(k for k, _ in sessions[w.session].health) if w.session in sessions else ()
                                 for w in workers])
    return trace


def _in_effect(res, now: float) -> np.ndarray | None:
    """The calendar the data plane uses at `now`: ticks are µs timestamps here (the reserve seed)."""
    tick = int(now * TICK_RATE_HZ)
    live = [e for e in res.epochs if e.boundary <= tick]
    if not live:
        return None
    return np.asarray(max(live, key=lambda e: e.boundary).calendar)


def summarize(trace: Trace, changes: Sequence[float] = (), band: float = 0.10) -> dict:
    """Balancing figures of a run: losses (start-up and after each change), epochs until every slot
    share is first within ±`band` (relative) of its capacity share, the fraction of the second half
    of each phase spent in band, fill spread, slot
    moves per epoch and calendar changes per minute over the second half of the last phase."""
    a = trace.arrays()
    t, epoch, lost = a["t"], a["epoch"], np.nansum(a["lost"], axis=1)
    bounds = [0.0, *changes, math.inf]
    phases = []
    for lo, hi in zip(bounds, bounds[1:]):
        idx = np.flatnonzero((t >= lo) & (t < hi))
        if idx.size == 0:
            continue
        ok = np.all(np.abs(np.nan_to_num(a["slot_share"][idx] - a["capacity_share"][idx]))
                    <= band * np.nan_to_num(a["capacity_share"][idx]) + 1e-9, axis=1)
        first = int(np.argmax(ok)) if ok.any() else None  # probes leave the band briefly, by design
        start_epoch = epoch[idx[0] - 1] if idx[0] > 0 else 0
        phases.append({
            "from_s": lo,
            "lost": float(lost[idx[-1]] - (lost[idx[0] - 1] if idx[0] > 0 else 0.0)),
            "epochs_to_band": None if first is None else int(epoch[idx[first]] - start_epoch),
            "in_band": float(ok[idx.size // 2:].mean()),  # fraction of the phase's second half
        })
    last = phases[-1]["from_s"] if phases else 0.0
    half = last + (t[-1] - last) / 2 if t.size else 0.0
    tail = t >= half
    span = (t[-1] - half) / 60 if t.size else 0.0
    epochs = int(epoch[-1]) if t.size else 0
    spread = np.nanmax(a["fill"], axis=1) - np.nanmin(a["fill"], axis=1) if t.size else np.zeros(0)
    return {
        "lost": float(lost[-1]) if t.size else 0.0,
        "phases": phases,
        "fill_spread": float(np.nanmean(spread)) if spread.size else 0.0,
        "moves_per_epoch": float(a["moves"][-1] / epochs) if epochs else 0.0,
        "changes_per_min_steady": float((epoch[tail][-1] - epoch[tail][0]) / span) if span > 0 else 0.0,
        "epochs": epochs,
    }
