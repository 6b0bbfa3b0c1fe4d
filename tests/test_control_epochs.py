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


# -- sync poisoning from an allowed sender (issue 16) -------------------------------------------------
US = 1_000_000  # µs ticks: the rate every E2SAR sender reports by default
BASE = 1_700_000_000 * US


def genuine(t):
    return ep.SyncSample(t, BASE + int(t * US), US, 7)


def feed(samples, suspects, sample):
    """What ControlService.accept_sync does with a screened sample; returns the outcome."""
    outcome, kept = ep.screen(samples, tuple(suspects), sample)
    if outcome == ep.ACCEPTED:
        samples.append(kept[0])
        suspects.clear()
    elif outcome == ep.RESTARTED:
        samples[:] = kept
        suspects.clear()
    else:
        suspects[:] = kept
    del samples[:-ep.MAX_SAMPLES]
    return outcome


def poisoned(rnd, t):
    """One hostile sample: absurd event number, rate 0 with a jump, rate beyond physical, or a
    plausible event number with an absurd rate."""
    kind = rnd.randrange(4)
    if kind == 0:
        return ep.SyncSample(t, rnd.randrange(2**64), rnd.randrange(2**32), rnd.randrange(2**32))
    if kind == 1:
        return ep.SyncSample(t, BASE + int(t * US) + rnd.choice([-1, 1]) * rnd.randrange(2 * US, 2**62), 0, 7)
    if kind == 2:
        return ep.SyncSample(t, BASE + int(t * US), rnd.randrange(ep.MAX_RATE_HZ + 1, 2**32), 7)
    return ep.SyncSample(t, BASE + int(t * US), rnd.choice([0, 1, US // 10, 10 * US, 900 * US]) or 1, 7)


def test_burst_of_poisoned_samples_is_rejected_and_moves_no_boundary():
    rnd = random.Random(16)
    samples, suspects = [], []
    for t in range(11):
        assert feed(samples, suspects, genuine(float(t))) == ep.ACCEPTED
    clean = list(samples)
    previous = ep.next_boundary(clean, 9.5, None)
    outcomes = [feed(samples, suspects, poisoned(rnd, 10.3 + i * 1e-4)) for i in range(2000)]  # 0.2 s
    assert set(outcomes) == {ep.REJECTED_JUMP, ep.REJECTED_RATE}  # none accepted, no restart
    assert ep.next_boundary(samples, 10.4, previous) == ep.next_boundary(clean, 10.4, previous)
    assert feed(samples, suspects, genuine(11.0)) == ep.ACCEPTED and suspects == []


def test_poisoned_samples_inside_the_tolerance_move_the_boundary_a_bounded_amount():
    """The worst an allowed sender can do while the genuine one keeps syncing: samples at the
    edge of the tolerance with the rate at the factor's edge or none, for up to REF_GAP_S."""
    rnd = random.Random(3)
    for trial in range(200):
        samples, suspects = [], []
        for t in range(11):
            feed(samples, suspects, genuine(float(t)))
        clean = list(samples)
        now = 10.05 + rnd.random() * 0.9
        for i in range(50):
            t = 10.0 + (now - 10.0) * i / 50
            tol = ep.tolerance(US, t - 9.0)  # judged against the line at genuine(9): ≥ REF_GAP_S older
            e = BASE + int(t * US) + int(rnd.uniform(-1, 1) * tol)
            feed(samples, suspects, ep.SyncSample(t, e, int(US * rnd.choice([0, 0.5, 1, 2, 0.4, 3])), 7))
        shift = abs(ep.predict(samples, now + ep.LEAD_S) - ep.predict(clean, now + ep.LEAD_S))
        assert shift <= ep.max_shift(US, now - 9.0), (trial, shift)


def test_a_restarted_sender_is_followed_after_confirmation_a_burst_never():
    samples, suspects = [], []
    for t in range(5):
        feed(samples, suspects, genuine(float(t)))
    # a burst of mutually consistent samples on a new line: too short to be a restart
    burst = [ep.SyncSample(5.0 + i * 0.01, 10**15 + i * 10**4, US, 7) for i in range(100)]
    assert {feed(samples, suspects, s) for s in burst} == {ep.REJECTED_JUMP}
    # the sender really restarts its event numbers from 0 (rate 0: the line is fitted)
    new = [ep.SyncSample(6.0 + i, 1000 * i, 0, 7) for i in range(4)]
    assert [feed(samples, suspects, s) for s in new[:3]] == [ep.REJECTED_JUMP] * 2 + [ep.RESTARTED]
    assert samples == new[:3] and abs(ep.predict(samples, 8.5) - 2500) <= 1
    assert feed(samples, suspects, new[3]) == ep.ACCEPTED


def test_rate_beyond_physical_is_rejected_even_first():
    assert ep.screen([ep.seed_sample(100.0)], (), ep.SyncSample(100.5, 5, ep.MAX_RATE_HZ + 1, 1))[0] == ep.REJECTED_RATE
    assert ep.screen([ep.seed_sample(100.0)], (), ep.SyncSample(100.5, 5, ep.MAX_RATE_HZ, 1))[0] == ep.ACCEPTED
    one = [ep.SyncSample(1.0, 500, 1000, 1)]
    # within the tolerance; rate 0 is down-weighted to the slope seen since the reference
    assert ep.judge(one, ep.SyncSample(2.0, 1500 + ep.FLOOR_TICKS, 0, 1)) == \
        (None, ep.SyncSample(2.0, 1500 + ep.FLOOR_TICKS, 1000 + ep.FLOOR_TICKS, 1))
    assert ep.judge(one, ep.SyncSample(2.0, 10**9, 0, 1))[0] == ep.REJECTED_JUMP  # rate 0 with a jump
    assert ep.judge(one, ep.SyncSample(2.0, 1500, 2001, 1))[0] == ep.REJECTED_RATE
    assert ep.judge(one, ep.SyncSample(70.0, 10**9, 0, 1))[0] is None  # a line 69 s old tells nothing


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 0.94), st.integers(-3 * US, 3 * US) | st.integers(0, 2**64 - 1),
                          st.sampled_from([0, US // 2, US, 2 * US, 3 * US]) | st.integers(0, 2**32 - 1)),
                max_size=40))
def test_any_burst_shorter_than_the_reference_gap_moves_the_boundary_at_most_max_shift(burst):
    """Property form of the bound: after a genuine µs stream, any samples from an allowed sender
    within REF_GAP_S (event numbers near the line or anywhere, any rate) shift the prediction at
    now + LEAD_S by at most max_shift."""
    samples, suspects = [], []
    for t in range(11):
        feed(samples, suspects, genuine(float(t)))
    clean = list(samples)
    now = 10.95
    for dt, off, rate in sorted(burst):
        e = off if off > 3 * US else BASE + int((10.0 + dt) * US) + off
        feed(samples, suspects, ep.SyncSample(10.0 + dt, e % 2**64, rate, 7))
    shift = abs(ep.predict(samples, now + ep.LEAD_S) - ep.predict(clean, now + ep.LEAD_S))
    assert shift <= ep.max_shift(US, now - 9.0)
