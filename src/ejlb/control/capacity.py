"""Capacity-following allocation: each worker's service rate, measured from the state reports it
already sends, decides its share of the calendar. Pure: the caller passes the clock.

Why capacity and not the control signal: what a worker can take is its service rate (events/s);
slots should be in proportion to it, so that every worker runs at the same utilisation and the
headroom is spread evenly. The deployed rule adds up control signals instead, so a worker's share
depends on its history (one overload leaves it near its floor for good).

What is observable (every EJFAT receiver sends it, E2SAR with zero PID gains included):
- `totalEventsDequeued` counts what the application took. While the queue is non-empty at both
  ends of a report interval, the application was busy all along, so the dequeue rate over such
  intervals *is* its capacity (`Meter`). A worker that is busy for most of a window is *measured*.
- A worker with headroom dequeues everything it is offered: its offered rate
  (`totalEventsReassembled`) is only a lower bound on its capacity. Below saturation the queue is
  empty and says nothing more, so a capacity can only be learned by offering more than it.

The law (`Balancer.plan`, once per controller tick):
1. A measured window sets the estimate (a slowdown is seen within one tick). Otherwise the estimate
   never falls below the offered rate (a worker that is faster than we thought shows it).
2. A worker that has never been measured starts from its registered weight, in the units of the
   workers already known (capacity per unit of registered weight), so a late joiner gets its weight
   from its first epoch. Until measured it is *discovering*: once per clean window (one observed
   wholly under the current calendar) its load is raised by `step`; it stops at the first measured
   window. Load steps are bounded, so an overshoot is at most `step − 1` of its capacity, for about
   one tick plus the epoch lead — the queue absorbs that.
3. Speed-ups are invisible below saturation, so after `probe_quiet_s` without a calendar change the
   worker with the oldest measurement (older than `probe_age_s`) is *probed*: offered `probe_load` ×
   its estimated capacity. A saturated probe re-measures it (two calendar changes, no loss);
   an unsaturated one means it got faster, and it keeps discovering upwards.
4. Slots ∝ estimates (`calendar.slot_counts`: weighted remainder, min/max factors, ≥ 1 slot).
5. Hysteresis: the calendar changes only if some worker's count moves by more than `tolerance`
   (relative, and at least `min_move` slots), so noise in the estimates never starts an epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence


URGENT_FILL = 0.25  # a report whose fill crosses this upwards makes the controller tick at once


@dataclass(frozen=True)
class Params:
    busy_fraction: float = 0.3  # a window is a measurement when busy for this much of it...
    min_busy_s: float = 0.15  # ...and at least this long
    step: float = 1.2  # load factor per discovery step
    probe_load: float = 1.1  # probe: offered load / estimated capacity
    probe_quiet_s: float = 20.0  # probe only after this long without a calendar change
    probe_age_s: float = 30.0  # only measurements older than this are probed
    tolerance: float = 0.04  # relative slot-count change that justifies a new calendar
    min_move: int = 2  # slots
    overflow_fill: float = 0.9  # fill at which a worker counts as overflowing (health)


@dataclass(frozen=True)
class Window:
    """What one worker's reports say about the time since the previous tick."""

    start: float
    end: float
    busy_s: float = 0.0  # report intervals with a non-empty queue at both ends
    busy_dequeued: int = 0  # events the application took during them
    offered: int = 0  # events reassembled (offered to the queue) over the whole window
    lost: int = 0  # events dropped because the queue was full
    fill: float = 0.0  # the last reported fill

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def offered_rate(self) -> float:
        return self.offered / self.seconds if self.seconds > 0 else 0.0


class Meter:
    """Accumulates one worker's state reports between two ticks (cheap: called per SendState)."""

    __slots__ = ("start", "last_t", "last_fill", "last_dequeued", "last_offered", "last_lost",
                 "busy_s", "busy_dequeued", "offered", "lost")

    def __init__(self) -> None:
        self.last_t: float | None = None
        self.start: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.busy_s = 0.0
        self.busy_dequeued = self.offered = self.lost = 0

    def observe(self, t: float, fill: float, dequeued: int, offered: int, lost: int) -> None:
        last = self.last_t
        if last is not None and t > last:
            dd, do, dl = dequeued - self.last_dequeued, offered - self.last_offered, lost - self.last_lost
            if min(dd, do, dl) >= 0:  # counters went back: the worker restarted; skip the interval
                if self.last_fill > 0 and fill > 0:
                    self.busy_s += t - last
                    self.busy_dequeued += dd
                self.offered += do
                self.lost += dl
        if self.start is None:
            self.start = t
        self.last_t, self.last_fill = t, fill
        self.last_dequeued, self.last_offered, self.last_lost = dequeued, offered, lost

    def take(self) -> Window | None:
        """The window since the previous take (None before two reports); starts the next one."""
        if self.start is None or self.last_t is None or self.last_t <= self.start:
            return None
        w = Window(self.start, self.last_t, self.busy_s, self.busy_dequeued, self.offered, self.lost,
                   self.last_fill)
        self.start = self.last_t
        self._reset()
        return w


@dataclass
class Estimate:
    """The control plane's belief about one worker's capacity."""

    capacity: float | None = None  # events/s; None until the worker has been seen
    measured_at: float | None = None  # last window that measured it
    discovering: bool = True  # its capacity is only a lower bound and it is being offered more
    target: float | None = None  # offered rate asked of it while discovering / probing
    overflowing: bool = False  # lost events or near-full queue in the last window


def measured_rate(w: Window, p: Params) -> float | None:
    """The capacity a window measures, or None when the worker had headroom."""
    if w.busy_s >= max(p.min_busy_s, p.busy_fraction * w.seconds) and w.busy_dequeued > 0:
        return w.busy_dequeued / w.busy_s
    return None


def observe(est: Estimate, w: Window | None, now: float, clean: bool, p: Params) -> Estimate:
    """Fold one tick's window into the estimate. `clean`: the window lies wholly under the current
    calendar, so a discovery step may be judged on it."""
    if w is None:
        return est
    est.overflowing = w.lost > 0 or w.fill >= p.overflow_fill
    rate = measured_rate(w, p)
    if rate is not None:
        est.capacity, est.measured_at, est.discovering, est.target = rate, now, False, None
        return est
    offered = w.offered_rate
    if offered > 0:
        est.capacity = max(est.capacity or 0.0, offered)
    if est.discovering and clean and offered > 0 and w.busy_s == 0 and w.fill == 0:  # full headroom
        est.target = max(offered * p.step, est.target or 0.0)
    return est


@dataclass(frozen=True)
class Worker:
    """A ready worker as the planner sees it."""

    key: int
    weight: float  # registered weight (> 0)
    min_factor: float
    max_factor: float


@dataclass
class Plan:
    shares: dict[int, float]  # desired capacity (or its stand-in) per worker: slots follow it
    probing: int | None = None
    notes: dict[int, str] = field(default_factory=dict)


def prior(weight: float, known: Sequence[tuple[float, float]]) -> float:
    """A new worker's capacity from its registered weight, in the units of the known workers:
    `known` = [(capacity, registered weight)]."""
    if not known:
        return weight
    per_weight = sum(c for c, _ in known) / sum(w for _, w in known)
    return weight * per_weight


def seed(workers: Sequence[Worker], estimates: Mapping[int, Estimate]) -> None:
    """Give workers seen for the first time their prior (registered weight in known units)."""
    known = [(estimates[w.key].capacity, w.weight) for w in workers if estimates[w.key].capacity]
    for w in workers:
        if not estimates[w.key].capacity:
            estimates[w.key].capacity = prior(w.weight, known)


def desired(workers: Sequence[Worker], estimates: Mapping[int, Estimate], offered_total: float) -> dict[int, float]:
    """Capacity-proportional shares, with discovering/probing workers placed at their target load:
    the rest of the offered load is split over the others in proportion to their estimates."""
    cap = {w.key: estimates[w.key].capacity or 0.0 for w in workers}
    targets = {w.key: estimates[w.key].target for w in workers if estimates[w.key].target}
    if len(targets) == len(workers) > 1:  # someone must absorb what the others are offered more
        del targets[min(targets, key=lambda k: (cap[k], k))]
    if not targets or offered_total <= 0:
        return cap
    rest = offered_total - sum(targets.values())
    others = sum(c for k, c in cap.items() if k not in targets)
    if rest <= 0.05 * offered_total or others <= 0:  # the targets alone cover the load: share by them
        return {k: targets.get(k, 0.0) or cap[k] * 1e-3 for k in cap}
    scale = others / rest  # capacity units per event/s of the non-target workers
    return {k: targets[k] * scale if k in targets else c for k, c in cap.items()}


def start_probe(workers: Sequence[Worker], estimates: Mapping[int, Estimate], now: float,
                quiet_since: float, p: Params) -> int | None:
    """After a quiet spell, put the worker with the oldest measurement under probe."""
    if any(estimates[w.key].discovering for w in workers) or now - quiet_since < p.probe_quiet_s:
        return None
    due = [w for w in workers if estimates[w.key].measured_at is not None
           and now - estimates[w.key].measured_at >= p.probe_age_s]
    if not due:
        return None
    w = min(due, key=lambda w: (estimates[w.key].measured_at, w.key))
    e = estimates[w.key]
    e.discovering, e.target = True, (e.capacity or 0.0) * p.probe_load
    return w.key


WORKER_HEALTH = ("worker_overflowing", "worker_overflow_at_floor")


def health(est: Estimate, slots: int, unfloored: int, min_factor: float) -> tuple:
    """Health issues of one worker: (type, message) pairs for status, metrics and the monitor."""
    if not est.overflowing:
        return ()
    if min_factor > 0 and slots > unfloored:
        return (("worker_overflow_at_floor",
                 f"queue overflowing while minFactor={min_factor:g} holds it at {slots} slots; its measured "
                 f"capacity would give it {unfloored}: lower minFactor"),)
    return (("worker_overflowing", "queue full or dropping events: its share is being reduced"),)


def significant(old: Sequence[int], new: Sequence[int], p: Params) -> bool:
    """Hysteresis: is the new slot vector worth a new epoch?"""
    return any(abs(n - o) >= max(p.min_move, math.ceil(p.tolerance * max(o, 1))) or (n == 0) != (o == 0)
               for o, n in zip(old, new))
