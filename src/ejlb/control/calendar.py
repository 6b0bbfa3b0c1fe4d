"""Calendar computation: worker weights → slot counts → the 512-slot layout of one epoch. Pure.

Counts are proportional to weight within the deployed clamps (docs/control-api.md, "Slot counts":
[round(even·minFactor), round(even·maxFactor)], even = floor(512/n)), total exactly 512. Unlike the
deployed rule, which hands leftovers out one slot per worker per round whatever the weights, slots
that clamped workers cannot take are shared by weight (water-filling) and rounded by largest
remainder. Bounds that cannot all hold (Σmin > 512 or Σmax < 512) are relaxed.

Layout improvement over the deployed interleave-and-shuffle: with `previous` given, every slot
keeps its owner unless that owner's count shrank, so the number of slots that change owner equals
the lower bound Σ max(0, old_count − new_count) (see `min_moves`). Fewer moved slots means fewer
calendar writes and less re-steering of ticks when a new epoch starts.
"""
from __future__ import annotations

import functools
import random
from typing import Mapping, Sequence

import numpy as np

from ejlb.dataplane.tables import UNASSIGNED
from ejlb.errors import EjlbError
from ejlb.wire import CALENDAR_SLOTS

STRATEGIES = ("", "dynamic", "static", "explicit")


class CalendarError(EjlbError, ValueError):
    """Calendar inputs no layout can satisfy (the message names field and value)."""


def slot_counts(
    weights: Sequence[float],
    min_factors: Sequence[float] | None = None,
    max_factors: Sequence[float] | None = None,
    slots: int = CALENDAR_SLOTS,
    min_slots: int = 0,
) -> list[int]:
    """Slots per worker, in input order; sums to `slots` whenever there is at least one worker.

    Proportional to weight within [round(even·minFactor), round(even·maxFactor)] (maxFactor 0: no
    cap): water-filling (one rate for all, each worker clamped to its bounds, the rate chosen so the
    total is `slots`), then whole slots by largest remainder. So the slots a capped
    worker cannot take go to the others by weight, not one each. `min_slots` (if every worker can
    have it) keeps each worker in the calendar, so its capacity keeps being observed."""
    n = len(weights)
    if n == 0:
        return []
    w = np.maximum(np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0, posinf=0.0), 0.0)
    if w.sum() <= 0:
        w = np.ones(n)
    even = slots // n
    mins = np.zeros(n) if min_factors is None else np.asarray(min_factors, dtype=np.float64)
    maxs = np.zeros(n) if max_factors is None else np.asarray(max_factors, dtype=np.float64)
    lo = np.maximum(np.rint(even * np.maximum(mins, 0.0)), min_slots if min_slots * n <= slots else 0)
    hi = np.maximum(np.where(maxs > 0, np.rint(even * maxs), slots), lo)
    if lo.sum() > slots:  # minimums cannot all be met: drop them
        lo[:] = 0
    if hi.sum() < slots:  # maximums leave slots unowned: drop them
        hi[:] = slots
    # one rate r for everyone: Σ clip(r·w, lo, hi) = slots (monotone in r)
    r_hi = fill_rate(w, lo, hi, slots)
    exact = np.clip(r_hi * w, lo, hi)
    count = np.clip(np.floor(exact + 1e-9), lo, hi).astype(np.int64)
    order = np.arange(n)
    while (left := slots - int(count.sum())) != 0:  # largest remainder; ties to the lower index
        if left > 0:
            ok, key = count < hi, exact - count
        else:
            ok, key = count > lo, count - exact
        idx = order[ok][np.argsort(-key[ok], kind="stable")][: abs(left)]
        count[idx] += 1 if left > 0 else -1
    return count.tolist()


def fill_rate(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, slots: int) -> float:
    """The rate of water-filling: what bisecting Σ clip(r·w, lo, hi) ≥ slots over [0, R] 100 times
    returns (R = slots / the least positive w), i.e. the least float r with Σ ≥ slots, in ~15
    evaluations instead of 100: Newton steps on the piecewise-linear sum (kept inside the bracket)
    to the root, a bracket of a few ulps around it, bisection to adjacent floats. Where 100 halvings
    of [0, R] would stop short of adjacent floats (weights spanning ~2^45), the 100 halvings."""
    total = lambda r: np.minimum(np.maximum(r * w, lo), hi).sum()  # noqa: E731 - np.clip, lo <= hi

    r_max = slots / w[w > 0].min() if (w > 0).any() else 1.0

    def halvings() -> float:
        a, b = 0.0, r_max
        for _ in range(100):
            mid = (a + b) / 2
            a, b = (mid, b) if total(mid) < slots else (a, mid)
        return b

    a, b = 0.0, r_max
    if total(a) >= slots or total(b) < slots:  # bisection never moves one end
        return halvings()
    r = min(max(slots / w.sum(), a), b)
    for _ in range(64):
        v = r * w
        clipped = np.minimum(np.maximum(v, lo), hi)
        a, b = (r, b) if clipped.sum() < slots else (a, r)
        free = (v > lo) & (v < hi)  # on the linear part: there the sum grows by Σ w per unit of r
        slope = w[free].sum()
        step = (slots - clipped[~free].sum()) / slope if slope > 0 else (a + b) / 2
        if abs(step - r) <= 4 * np.spacing(r):  # Newton's fixpoint: the root is within a few ulps
            near_a, near_b = min(r, step) - 4 * np.spacing(r), max(r, step) + 4 * np.spacing(r)
            if a < near_a and total(near_a) < slots:
                a = near_a
            if near_b < b and total(near_b) >= slots:
                b = near_b
            break
        if b - a <= b * 2.0 ** -40:
            break
        r = step if a < step < b else (a + b) / 2
    if b - a > b * 2.0 ** -40 or r_max * 2.0 ** -100 > np.spacing(b) / 2:
        return halvings()
    while True:  # to adjacent floats: b is then the least float with Σ >= slots
        mid = (a + b) / 2
        if mid <= a or mid >= b:
            return float(b)
        a, b = (mid, b) if total(mid) < slots else (a, mid)


SPREAD_BITS = 5  # slot strides up to 2^5 stay balanced; runs of one member stay <= ~2^5 slots


@functools.lru_cache(maxsize=4)
def spread_rank(slots: int = CALENDAR_SLOTS) -> tuple[int, ...]:
    """The order in which the layout fills slots: slot s = (high, low) with low = its SPREAD_BITS low
    bits goes to position bit_reverse(low)·(slots >> SPREAD_BITS) + high.

    Why: slot = tick mod 512, and senders in the field stamp µs timestamps, so a sender at a fixed
    rate steps its ticks by a constant; if that step shares a factor 2^j with 512, it only ever meets
    the slots ≡ r (mod 2^j) (1 kHz: every 8th slot). Filled in plain slot order, an interleaved
    layout gives those slots to a few members: four equal workers and a 10 kHz sender send everything
    to one. Filled in this order, every residue class mod 2^j (j ≤ SPREAD_BITS) is a contiguous run
    of positions, so each holds every member in proportion; consecutive ticks still rotate over the
    members within runs of ≤ 2^SPREAD_BITS slots."""
    bits = min(SPREAD_BITS, max(slots.bit_length() - 1, 0))
    if slots != 1 << (slots.bit_length() - 1) or bits == 0:
        return tuple(range(slots))
    high = slots >> bits
    return tuple(int(format(s & ((1 << bits) - 1), f"0{bits}b")[::-1], 2) * high + (s >> bits)
                 for s in range(slots))


def _interleaved(quota: Mapping[int, int]) -> list[int]:
    """Members repeated by quota and spread evenly: member i's k-th copy sits at (k + φ_i)/q_i, with
    phases φ_i = (i + ½)/n staggered so that members with equal quotas alternate, not cluster."""
    n = max(len(quota), 1)
    keyed = [((k + (i + 0.5) / n) / q, i, m) for i, (m, q) in enumerate(quota.items()) for k in range(q)]
    keyed.sort()
    return [m for _, _, m in keyed]


def _place_demands(cal: list[int], quota: dict[int, int], demands: Mapping[int, Sequence[tuple[int, int]]]) -> None:
    for member, ranges in demands.items():
        for index, length in ranges:
            if index >= 0:
                slots = [s for s in range(index, min(index + length, len(cal))) if cal[s] == UNASSIGNED]
            else:  # first free run long enough, else whatever free slots exist
                slots = _free_run(cal, length)
            for s in slots:
                cal[s] = member
            quota[member] = quota.get(member, 0) - len(slots)


def _free_run(cal: list[int], length: int) -> list[int]:
    run = []
    for s, m in enumerate(cal):
        run = run + [s] if m == UNASSIGNED else []
        if len(run) == length:
            return run
    return [s for s, m in enumerate(cal) if m == UNASSIGNED][:length]


def layout(
    counts: Mapping[int, int],
    previous: Sequence[int] | None = None,
    *,
    strategy: str = "",
    demands: Mapping[int, Sequence[tuple[int, int]]] | None = None,
    sticky: bool = True,
    rng: random.Random | None = None,
    slots: int = CALENDAR_SLOTS,
) -> tuple[int, ...]:
    """The calendar: slot → member id (UNASSIGNED where no one owns it).

    strategy "" / "dynamic": counts only; "static": demanded ranges first, then counts;
    "explicit": demanded ranges only. `sticky=False` reproduces the deployed layout
    (interleave, shuffled for "dynamic") and ignores `previous`."""
    if strategy not in STRATEGIES:
        raise CalendarError(f"strategy={strategy!r}: must be one of {STRATEGIES}")
    cal = [UNASSIGNED] * slots
    quota = {m: int(c) for m, c in counts.items() if c > 0}
    if strategy in ("static", "explicit") and demands:
        _place_demands(cal, quota, demands)
        if strategy == "explicit":
            return tuple(cal)
    quota = {m: q for m, q in quota.items() if q > 0}
    if not sticky:  # the deployed layout: interleaved in slot order, shuffled for "dynamic"
        fill = _interleaved(quota)
        if strategy == "dynamic":
            (rng or random.Random()).shuffle(fill)
        for s, m in zip((s for s in range(slots) if cal[s] == UNASSIGNED), fill):
            cal[s] = m
        return tuple(cal)
    rank = spread_rank(slots)
    if previous is not None:  # each member keeps what it can; one that shrank keeps an even subset
        kept: dict[int, list[int]] = {}
        for s, m in enumerate(previous[:slots]):
            if cal[s] == UNASSIGNED and m in quota:
                kept.setdefault(m, []).append(s)
        for m, owned in kept.items():
            if len(owned) > quota[m]:
                owned.sort(key=rank.__getitem__)
                owned = [owned[(2 * k + 1) * len(owned) // (2 * quota[m])] for k in range(quota[m])]
            for s in owned:
                cal[s] = m
            quota[m] -= len(owned)
    free = sorted((s for s in range(slots) if cal[s] == UNASSIGNED), key=rank.__getitem__)
    for s, m in zip(free, _interleaved(quota)):
        cal[s] = m
    return tuple(cal)


def moves(previous: Sequence[int], current: Sequence[int]) -> int:
    """Slots whose owner changed (slots that were unassigned before do not count)."""
    return sum(1 for a, b in zip(previous, current) if a != UNASSIGNED and a != b)


def min_moves(previous: Sequence[int], counts: Mapping[int, int]) -> int:
    """Lower bound on `moves` for any layout with these counts: every slot above a member's new count
    must change owner."""
    old: dict[int, int] = {}
    for m in previous:
        if m != UNASSIGNED:
            old[m] = old.get(m, 0) + 1
    return sum(max(0, c - counts.get(m, 0)) for m, c in old.items())


def slot_ranges(calendar: Sequence[int], member: int) -> list[tuple[int, int]]:
    """The member's slots as (index, length) runs, for WorkerStatus.slots."""
    out: list[tuple[int, int]] = []
    for s, m in enumerate(calendar):
        if m != member:
            continue
        if out and out[-1][0] + out[-1][1] == s:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((s, 1))
    return out
