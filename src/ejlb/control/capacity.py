"""Capacity-following allocation: each worker's service rate, measured from the state reports it
already sends, decides its share of the calendar. Pure: the caller passes the clock.

Why capacity and not the control signal: what a worker can take is its service rate (events/s).
Slots in proportion to it give every worker the same utilisation, so the headroom is spread evenly
and in overload the losses are spread in proportion to capacity. The deployed rule sums control
signals instead, so a share depends on history (one overload leaves a worker near its floor).

What is observable (every EJFAT receiver sends it, E2SAR with zero PID gains included):
- `totalEventsDequeued` counts what the application took. While the queue holds events at both
  ends of a report interval (at least BUSY_FILL: one-event blips are noise) the application was busy
  throughout, so the dequeue rate over such intervals *is* its capacity (`Meter`). A window busy
  long enough *measures* the worker: exact (re-measurements within `noise` are averaged).
- A worker with headroom takes everything it is offered: its offered rate
  (`totalEventsReassembled`) is only a *lower bound*. Below saturation the queue is empty and
  tells nothing more, so a capacity can only be learned by offering a worker more than it takes.

The law (`Controller._capacity_counts` calls these once per tick):
1. `observe`: a measuring window sets the estimate (a slowdown is seen within a tick; the
   controller also ticks at once when a queue crosses URGENT_FILL). Otherwise the estimate never
   falls below the offered rate, and a lower bound not shown again fades towards it (`bound_decay`):
   a worker that slowed down without ever saturating must not keep a stale bound.
2. `seed`: a worker seen for the first time starts from its registered weight in the units of the
   known workers (capacity per unit of registered weight), so a late joiner has its weight from its
   first epoch.
3. `discover`: a worker not yet measured is offered `step` × what it took, once per clean window
   (one observed wholly under the current calendar, its queue short of busy), until a window measures
   it. Steps are bounded, so an overshoot is at most `step − 1` of its capacity, for a tick plus
   the epoch lead; the queue absorbs that. Workers under discovery take at most `discovery_cap` of
   the stream between them (the others wait their turn), so no worker is starved to measure
   another; one that would need more alone cannot be saturated at this load: its lower bound stands
   until the load grows by a quarter, or for CAPPED_PROBE_AGES probe ages.
4. `start_probe`: speed-ups are invisible below saturation, so after `probe_quiet_s` without a
   calendar change the workers with the oldest measurements (older than `probe_age_s`) are offered
   `probe_load` × their capacity, as many at once as fit in `discovery_cap` of the stream: saturated,
   a worker is re-measured (two calendar changes per round, no loss); unsaturated, it got faster and
   keeps discovering.
5. `desired`: loads in proportion to capacity, workers under discovery at their target. A lower
   bound counts at least its registered weight in measured units; with no worker measured, the
   registered weights alone set the shares (lower bounds only say who was offered what). While
   some worker's headroom is unknown, a measured worker is planned at most at `max_utilisation`,
   and at most at 1 − `drain`·fill while its queue is filled, so it drains. Slots follow the loads
   (`calendar.slot_counts`: water-filling within min/max factors, largest remainder, at least one
   slot each, so every worker stays observable).
6. `significant`: hysteresis. The calendar changes only if some worker's count moves by more than
   `tolerance` (and `min_move` slots), or an overflowing worker would lose slots, so noise in the
   estimates never starts an epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from ejlb.wire import CALENDAR_SLOTS


BUSY_FILL = 0.02  # a report interval counts as busy when the queue holds at least this much at both ends
CAPPED_PROBE_AGES = 4  # a worker discovery gave up on is probed again after this many probe ages
URGENT_FILL = 0.25  # a report whose fill crosses this upwards makes the controller tick at once


@dataclass(frozen=True)
class Params:
    busy_fraction: float = 0.3  # a window is a measurement when busy for this much of it...
    min_busy_s: float = 0.15  # ...and at least this long
    step: float = 1.2  # load factor per discovery step
    probe_load: float = 1.1  # probe: offered load / estimated capacity
    probe_quiet_s: float = 30.0  # probe only after this long without a calendar change
    probe_age_s: float = 30.0  # only measurements older than this are probed
    bound_decay: float = 0.98  # per tick: a lower bound not shown again fades to what is offered
    noise: float = 0.15  # re-measurements this close to the estimate are averaged, not taken as news
    drain: float = 0.5  # a measured worker with fill f is planned at most at 1 - drain·f (drains its queue)
    tolerance: float = 0.06  # relative slot-count change that justifies a new calendar
    min_move: int = 3  # slots
    discovery_cap: float = 0.8  # of the offered load that workers under discovery may take together
    max_utilisation: float = 0.9  # planned load / measured capacity while others have unknown headroom
    overflow_fill: float = 0.9  # fill at which a worker counts as overflowing (health)


class Window(NamedTuple):
    """What one worker's reports say about the time since the previous tick (a NamedTuple, not a
    frozen dataclass: the controller makes one per worker per tick)."""

    start: float
    end: float
    busy_s: float = 0.0  # report intervals with at least BUSY_FILL queued at both ends
    busy_dequeued: int = 0  # events the application took during them
    offered: int = 0  # events reassembled (offered to the queue) over the whole window
    lost: int = 0  # events dropped because the queue was full
    fill: float = 0.0  # the last reported

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
                if min(self.last_fill, fill) >= BUSY_FILL:  # not a one-event blip: the app is behind
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
    exact: bool = False  # measured at saturation; else `capacity` is a lower bound
    measured_at: float | None = None  # when it was last measured (or discovery gave up)
    discovering: bool = True  # a lower bound that discovery will push on
    target: float | None = None  # offered rate asked of it while discovering / probing
    capped_load: float | None = None  # discovery gave up at this total offered load
    headroom: bool = False  # the last window was clean and not busy
    offered: float = 0.0  # offered rate in the last window
    overflowing: bool = False  # lost events or a near-full queue in the last window
    fill: float = 0.0  # last reported


def measured_rate(w: Window, p: Params) -> float | None:
    """The capacity a window measures, or None when the worker had headroom: busy for a good part
    of the window, or busy at its end (still behind: what an early tick sees)."""
    if w.busy_dequeued <= 0 or w.busy_s < p.min_busy_s:
        return None
    if w.busy_s >= p.busy_fraction * w.seconds or w.fill >= BUSY_FILL:
        return w.busy_dequeued / w.busy_s
    return None


def observe(est: Estimate, w: Window | None, now: float, clean: bool, p: Params) -> Estimate:
    """Fold one tick's window into the estimate. `clean`: the window lies wholly under the current
    calendar, so a discovery step may be judged on it."""
    est.headroom = False
    if w is None:
        return est
    est.overflowing = w.lost > 0 or w.fill >= p.overflow_fill
    est.fill = w.fill
    seconds = w.end - w.start
    est.offered = w.offered / seconds if seconds > 0 else 0.0  # w.offered_rate, without two property calls
    rate = measured_rate(w, p)
    if rate is not None:
        if est.exact and est.capacity and abs(rate - est.capacity) <= p.noise * est.capacity:
            rate = (est.capacity + rate) / 2  # the same capacity measured again: average the noise
        est.capacity, est.exact, est.measured_at = rate, True, now
        est.discovering, est.target, est.capped_load = False, None, None
        return est
    if est.offered > 0:
        if est.exact:  # more than measured: it got faster
            est.capacity = max(est.capacity or 0.0, est.offered)
        else:  # a lower bound holds only while the worker keeps showing it (it may have slowed down)
            est.capacity = max((est.capacity or 0.0) * p.bound_decay, est.offered)
        est.headroom = clean and w.busy_s < p.min_busy_s and w.fill < URGENT_FILL
    return est


def observed(est: Estimate) -> float:
    """The estimate in events/s for operators: 0 while it is only a registered-weight prior."""
    return (est.capacity or 0.0) if est.exact or est.offered > 0 else 0.0


class Worker(NamedTuple):
    """A ready worker as the planner sees it."""

    key: int
    weight: float  # registered weight (> 0)


def prior(weight: float, known: Sequence[tuple[float, float]]) -> float:
    """A new worker's capacity from its registered weight, in the units of the known workers:
    `known` = [(capacity, registered weight)]."""
    if not known:
        return weight
    return weight * sum(c for c, _ in known) / sum(w for _, w in known)


def seed(workers: Sequence[Worker], estimates: Mapping[int, Estimate]) -> None:
    """Give workers seen for the first time their prior (registered weight in known units)."""
    known = [(estimates[w.key].capacity, w.weight) for w in workers if estimates[w.key].capacity]
    for w in workers:
        if not estimates[w.key].capacity:
            estimates[w.key].capacity = prior(w.weight, known)


def discover(workers: Sequence[Worker], estimates: Mapping[int, Estimate], offered_total: float, now: float,
             p: Params) -> None:
    """One discovery round. Workers under way step up when their last window showed headroom; one
    that would need more than `discovery_cap` of the stream alone cannot be saturated at this load
    (its lower bound stands); if those under way need more than that together, the largest pauses.
    When none is under way, a new batch starts (never all workers: someone must take less)."""
    room = p.discovery_cap * offered_total
    slot = offered_total / CALENDAR_SLOTS  # a step moves at least one slot, or a small worker never gets on
    ests = [estimates[w.key] for w in workers]
    for e in ests:
        if e.target and e.headroom:
            e.target = max(e.offered * p.step, e.offered + slot, e.target)
        if e.target and e.target > room:
            e.discovering, e.target, e.measured_at, e.capped_load = False, None, now, offered_total
    going = [e for e in ests if e.target]
    while sum(e.target for e in going) > room:
        largest = max(going, key=lambda e: e.target)
        largest.target = None  # paused: still discovering, resumes from its lower bound
        going.remove(largest)
    if going:
        return
    order = sorted(range(len(ests)), key=lambda i: (ests[i].capacity or 0.0, workers[i].key))
    if all(e.discovering for e in ests) and len(ests) > 1:
        order = order[1:]  # the least capable takes what the others are offered more
    for i in order:
        e = ests[i]
        target = max((e.capacity or 0.0) * p.step, (e.capacity or 0.0) + slot)
        if e.discovering and e.headroom and target <= room:
            e.target = target
            room -= e.target


def start_probe(workers: Sequence[Worker], estimates: Mapping[int, Estimate], now: float,
                quiet_since: float, offered_total: float, p: Params) -> list[int]:
    """After a quiet spell, offer the workers with the oldest measurements a little more than their
    estimated capacity: as many at once as fit in `discovery_cap` of the stream (one probe round
    costs two calendars however many it covers); one that alone would need more is not probed."""
    ests = [estimates[w.key] for w in workers]
    if any(e.discovering for e in ests) or now - quiet_since < p.probe_quiet_s:
        return []
    due = sorted((w for w, e in zip(workers, ests) if e.measured_at is not None
                  and now - e.measured_at >= p.probe_age_s
                  and (e.capped_load is None or offered_total > 1.25 * e.capped_load
                       or now - e.measured_at >= CAPPED_PROBE_AGES * p.probe_age_s)),
                 key=lambda w: (estimates[w.key].measured_at, w.key))
    room, probed = p.discovery_cap * offered_total, []
    for w in due:
        e = estimates[w.key]
        target = max((e.capacity or 0.0) * p.probe_load, (e.capacity or 0.0) + offered_total / CALENDAR_SLOTS)
        if target <= room and len(probed) < len(workers) - 1:
            e.discovering, e.target, e.capped_load = True, target, None
            room -= target
            probed.append(w.key)
    return probed


def desired(workers: Sequence[Worker], estimates: Mapping[int, Estimate], offered_total: float,
            p: Params) -> dict[int, float]:
    """Planned offered load per worker (slots follow it): workers under discovery at their target,
    the rest of the stream in proportion to capacity. While any worker's capacity is only a lower
    bound, no measured worker is planned above `max_utilisation`: the excess goes to the workers
    with unknown headroom (beyond their targets: that only speeds up their discovery)."""
    cap = {w.key: estimates[w.key].capacity or 0.0 for w in workers}
    exact = [(cap[w.key], w.weight) for w in workers if estimates[w.key].exact]
    for w in workers:  # a lower bound says nothing about a worker relative to the others: weights do
        if not estimates[w.key].exact:
            cap[w.key] = max(cap[w.key], prior(w.weight, exact)) if exact else w.weight
    if offered_total <= 0:
        return cap
    load = {w.key: estimates[w.key].target for w in workers if estimates[w.key].target}
    free = [k for k in cap if k not in load]
    rest = max(offered_total - sum(load.values()), 0.0)
    total = sum(cap[k] for k in free)
    load.update({k: rest * cap[k] / total if total > 0 else rest / len(free) for k in free})
    open_ = [k for k in cap if not estimates[k].exact]
    if open_:
        excess = 0.0
        for k in cap:
            e = estimates[k]
            most = min(p.max_utilisation, 1.0 - p.drain * e.fill) * cap[k]
            if e.exact and not e.target and load[k] > most:
                excess += load[k] - most
                load[k] = most
        open_load = sum(load[k] for k in open_)  # kept current as loads grow (non-negative: no cancellation)
        base = open_load or 1.0
        for k in open_:
            add = excess * (load[k] / base if open_load else 1 / len(open_))
            load[k] += add
            open_load += add
    return {k: max(v, 1e-9 * (cap[k] or 1.0)) for k, v in load.items()}


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


def significant(old: Sequence[int], new: Sequence[int], overflowing: Sequence[bool], stepping: Sequence[bool],
                p: Params) -> bool:
    """Hysteresis: is the new slot vector worth a new epoch? So is any slot an overflowing worker
    loses, or gains a worker under discovery or probe (its step must be taken to be judged)."""
    o, n = np.asarray(old, dtype=np.int64), np.asarray(new, dtype=np.int64)
    hot, up = np.asarray(overflowing, dtype=bool), np.asarray(stepping, dtype=bool)
    moved = np.abs(n - o) >= np.maximum(p.min_move, np.ceil(p.tolerance * np.maximum(o, 1)))
    return bool(((n < o) & hot).any() or ((n > o) & up).any() or moved.any())
