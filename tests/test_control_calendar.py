"""Calendar: slot counts (total, bounds, proportionality) and layout (strategies, minimal moves,
spread over residue classes)."""
import itertools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ejlb.control import calendar as cal
from ejlb.dataplane.tables import UNASSIGNED

weights = st.lists(st.floats(0.01, 1000.0), min_size=1, max_size=64)


@settings(deadline=None)  # no wall-clock limits on a shared CI machine
@given(weights)
def test_counts_total_and_within_one_slot_of_proportional(w):
    counts = cal.slot_counts(w)
    assert sum(counts) == 512
    total = sum(w)
    for c, x in zip(counts, w):
        assert abs(c - 512 * x / total) < 1.0


@settings(deadline=None)  # no wall-clock limits on a shared CI machine
@given(st.lists(st.tuples(st.floats(0.01, 100.0), st.floats(0.0, 1.5), st.floats(0.0, 4.0)), min_size=1, max_size=40))
def test_counts_honour_feasible_bounds(rows):
    w = [r[0] for r in rows]
    mins = [r[1] for r in rows]
    maxs = [0.0 if r[2] < 0.1 else max(r[2], r[1]) for r in rows]
    counts = cal.slot_counts(w, mins, maxs)
    assert sum(counts) == 512
    even = 512 // len(w)
    lo = [round(even * m) for m in mins]
    hi = [round(even * m) if m > 0 else 512 for m in maxs]
    if sum(lo) <= 512 and sum(hi) >= 512:
        for c, a, b in zip(counts, lo, hi):
            assert a <= c <= b


def test_counts_deployed_example():
    # one worker capped at 0.5 x even of 2 workers = 128; the other takes the rest
    assert cal.slot_counts([1.0, 100.0], [0.5, 0.5], [2.0, 0.5]) == [384, 128]
    assert cal.slot_counts([]) == []
    assert cal.slot_counts([0.0, 0.0]) == [256, 256]  # no usable weights: equal shares
    assert sum(cal.slot_counts([1.0] * 1024)) == 512  # more workers than slots


@settings(deadline=None)  # no wall-clock limits on a shared CI machine
@given(st.lists(st.integers(0, 40), min_size=1, max_size=12), st.randoms(use_true_random=False),
       st.sampled_from(["", "dynamic"]), st.booleans())
def test_layout_matches_counts(raw, rnd, strategy, sticky):
    counts = dict(enumerate(cal.slot_counts([x + 0.01 for x in raw])))
    layout = cal.layout(counts, rng=rnd, strategy=strategy, sticky=sticky)
    assert len(layout) == 512 and UNASSIGNED not in layout
    for m, c in counts.items():
        assert layout.count(m) == c


@settings(deadline=None, max_examples=200)
@given(st.lists(st.floats(0.1, 10.0), min_size=1, max_size=16), st.lists(st.floats(0.1, 10.0), min_size=1, max_size=16))
def test_sticky_layout_moves_exactly_the_lower_bound(w_old, w_new):
    old_counts = dict(enumerate(cal.slot_counts(w_old)))
    new_counts = dict(enumerate(cal.slot_counts(w_new)))  # members may appear or disappear
    previous = cal.layout(old_counts)
    current = cal.layout(new_counts, previous)
    for m, c in new_counts.items():
        assert current.count(m) == c
    assert cal.moves(previous, current) == cal.min_moves(previous, new_counts)


def test_sticky_beats_deployed_layout():
    rnd = random.Random(1)
    previous = cal.layout(dict(enumerate(cal.slot_counts([1.0] * 8))))
    new_counts = dict(enumerate(cal.slot_counts([1.0] * 7 + [1.5])))
    sticky = cal.layout(new_counts, previous)
    deployed = cal.layout(new_counts, previous, strategy="dynamic", sticky=False, rng=rnd)
    assert cal.moves(previous, sticky) == cal.min_moves(previous, new_counts)
    assert cal.moves(previous, sticky) < cal.moves(previous, deployed)
    assert cal.layout(dict(enumerate(cal.slot_counts([1.0] * 8))), previous) == previous  # no change, no move


def residue_error(layout, counts, max_bits=cal.SPREAD_BITS) -> float:
    """Worst |slots of a member in a residue class mod 2^j - its share of the class|, j = 1..max_bits:
    what a sender whose ticks step by a multiple of 2^j (µs ticks at a fixed rate) sees."""
    lay = np.array(layout)
    return max(abs(np.count_nonzero(lay[r::1 << j] == m) - q / (1 << j))
               for j in range(1, max_bits + 1) for r in range(1 << j) for m, q in counts.items())


@given(st.lists(st.floats(0.1, 4.0), min_size=2, max_size=16))
def test_every_residue_class_holds_every_member_in_proportion(weights):
    counts = dict(enumerate(cal.slot_counts(weights)))
    assert residue_error(cal.layout(counts), counts) <= 3  # ~1 slot from the interleave, rounding adds


def test_strided_ticks_meet_every_worker():
    """Four equal workers and a 10 kHz sender stamping µs ticks (step 100 ≡ 100 mod 512, so only
    every 4th slot is met): filled in plain slot order the interleave gives all those slots to one
    worker; the layout's fill order gives each a quarter."""
    layout = cal.layout({m: 128 for m in range(4)})
    met = [layout[(100 * k) % 512] for k in range(512)]
    assert [met.count(m) for m in range(4)] == [128] * 4
    deployed = cal.layout({m: 128 for m in range(4)}, sticky=False)
    assert len({deployed[(100 * k) % 512] for k in range(512)}) == 1


def test_consecutive_ticks_rotate_over_members_within_short_runs():
    layout = cal.layout({0: 256, 1: 256})
    runs = [len(list(g)) for _, g in itertools.groupby(layout)]
    assert max(runs) <= 1 << cal.SPREAD_BITS


@given(st.lists(st.floats(0.1, 4.0), min_size=2, max_size=12), st.lists(st.lists(st.floats(0.1, 4.0),
       min_size=12, max_size=12), min_size=1, max_size=8))
def test_sticky_layouts_stay_spread(first, later):
    n = len(first)
    counts = dict(enumerate(cal.slot_counts(first)))
    layout = cal.layout(counts)
    for w in later:
        new = dict(enumerate(cal.slot_counts(w[:n])))
        current = cal.layout(new, layout)
        assert cal.moves(layout, current) == cal.min_moves(layout, new)  # still the lower bound
        layout, counts = current, new
    assert residue_error(layout, counts) <= 6


def test_static_and_explicit_demands():
    counts = {0: 256, 1: 256}
    static = cal.layout(counts, strategy="static", demands={1: [(0, 10)]})
    assert static[:10] == (1,) * 10
    assert static.count(1) == 256 and static.count(0) == 256
    explicit = cal.layout(counts, strategy="explicit", demands={0: [(100, 4)], 1: [(-1, 3)]})
    assert explicit[100:104] == (0,) * 4
    assert explicit[:3] == (1,) * 3
    assert explicit.count(UNASSIGNED) == 512 - 7
    with pytest.raises(cal.CalendarError, match="strategy='bogus'"):
        cal.layout(counts, strategy="bogus")


def test_slot_ranges():
    layout = (0, 0, 1, 0) + (UNASSIGNED,) * 508
    assert cal.slot_ranges(layout, 0) == [(0, 2), (3, 1)]
    assert cal.slot_ranges(layout, 1) == [(2, 1)]
