"""Epochs: boundary prediction on synthetic sync streams, the 4-epoch ring, LPM decomposition."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ejlb.control import epochs as ep
from ejlb.dataplane.tables import TICK_MAX, Tables


def stream(rate_at, t_end, period=1.0, jitter=0.0, report_rate=True, seed=0):
    """Samples of a sender whose tick advances at rate_at(t) per second, sent every `period` s
    (arrival jittered by up to `jitter` s)."""
    rnd = random.Random(seed)
    out, t, tick = [], 0.0, 1_000_000
    while t <= t_end:
        recv = t + rnd.uniform(0, jitter)
        out.append((recv, ep.SyncSample(recv, int(tick + rate_at(t) * (recv - t)),
                                        int(rate_at(t)) if report_rate else 0)))
        tick += rate_at(t) * period
        t += period
    return out, tick


def truth(rate_at, t, period=1.0):
    tick, s = 1_000_000.0, 0.0
    while s + period <= t:
        tick += rate_at(s) * period
        s += period
    return tick + rate_at(s) * (t - s)


def window(samples, now):
    return [s for recv, s in samples if recv <= now][-ep.MAX_SAMPLES:]


def test_steady_rate_is_exact():
    samples, _ = stream(lambda t: 10_000, 30)
    now = 30.2
    assert abs(ep.predict(window(samples, now), now + ep.LEAD_S) - truth(lambda t: 10_000, now + ep.LEAD_S)) <= 1


def test_rate_step_is_followed_by_the_next_sample():
    rate = lambda t: 1000 if t < 20 else 50_000  # noqa: E731
    samples, _ = stream(rate, 30)
    now = 25.5
    err = abs(ep.predict(window(samples, now), now + ep.LEAD_S) - truth(rate, now + ep.LEAD_S))
    assert err <= 50_000 * 0.01  # < 1 % of a second of events


def test_jitter_costs_at_most_rate_times_jitter():
    samples, _ = stream(lambda t: 100_000, 30, jitter=0.05, seed=3)
    now = 30.9
    err = abs(ep.predict(window(samples, now), now + ep.LEAD_S) - truth(lambda t: 100_000, now + ep.LEAD_S))
    assert err <= 100_000 * 0.05 + 1


def test_zero_rate_uses_regression():
    samples, _ = stream(lambda t: 20_000, 30, jitter=0.02, report_rate=False, seed=5)
    now = 30.5
    pred = ep.predict(window(samples, now), now + ep.LEAD_S)
    assert abs(pred - truth(lambda t: 20_000, now + ep.LEAD_S)) <= 20_000 * 0.05


def test_silence_extrapolates_from_last_sample_and_boundaries_stay_increasing():
    samples, _ = stream(lambda t: 1000, 10)
    w = window(samples, 10.5)
    later = 100.0  # sender silent for 90 s
    assert ep.predict(w, later) == w[-1].event_number + 1000 * (later - w[-1].recv_time)
    frozen = [ep.SyncSample(1.0, 500, 0)]  # one sample, no rate: the event number stays
    assert ep.predict(frozen, 50.0) == 500
    b1 = ep.next_boundary(frozen, 50.0, None)
    assert ep.next_boundary(frozen, 51.0, b1) == b1 + 1
    assert ep.predict([], 1.0) is None


def test_seed_sample_is_microseconds():
    s = ep.seed_sample(1_700_000_000.25)
    assert s.event_number == 1_700_000_000_250_000 and s.rate_hz == 1_000_000
    assert ep.predict([s], 1_700_000_001.25) == 1_700_000_001_250_000


def test_ring_keeps_four_and_newest_is_catch_all():
    live = ()
    for i, b in enumerate((100, 200, 300, 400, 500)):
        live = ep.advance(live, b, (i,) * 512)
    assert [e.seq for e in live] == [1, 2, 3, 4]
    assert [e.epoch_id for e in live] == [1, 2, 3, 0]
    r = ep.ranges(live)
    t = Tables(epochs={(0, k): v for k, v in r.items()})
    assert (t.epoch_for(0, 250), t.epoch_for(0, 399), t.epoch_for(0, 450)) == (1, 2, 3)
    assert t.epoch_for(0, 10**15) == 0  # newest: from its boundary on
    assert t.epoch_for(0, 5) == 0  # older than the oldest kept boundary: catch-all


def test_prefixes_exhaustive_8_bits():
    for start in range(0, 257, 3):
        for end in range(start, 257, 5):
            pfx = ep.range_prefixes(start, end, bits=8)
            covered = set()
            for v, n in pfx:
                size = 1 << (8 - n)
                assert v % size == 0  # aligned
                covered |= set(range(v, v + size))
            assert covered == set(range(start, end))
            assert sum(1 << (8 - n) for _, n in pfx) == end - start  # disjoint


@settings(deadline=None)  # no wall-clock limits on a shared CI machine
@given(st.lists(st.integers(0, TICK_MAX - 1), min_size=1, max_size=6, unique=True), st.lists(st.integers(0, TICK_MAX), min_size=1, max_size=20))
def test_lpm_matches_ranges_on_64_bit_ticks(bounds, ticks):
    live = ()
    for b in sorted(bounds):
        live = ep.advance(live, b, (0,) * 512)
    entries = ep.lpm_entries(live)
    assert len(entries) <= 1 + 3 * 2 * 64  # fits the FPGA's 1024-entry table for several LBs
    t = Tables(epochs={(0, k): v for k, v in ep.ranges(live).items()})
    for tick in ticks + [b for b in bounds] + [max(b - 1, 0) for b in bounds]:
        assert ep.lpm_lookup(entries, tick) == t.epoch_for(0, tick)
