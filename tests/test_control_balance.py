"""The capacity balancer (ejlb.control.capacity): its pure parts, and the whole loop in the
deterministic simulator (ejlb.control.sim), which drives the real ControlService and Controller."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ejlb.control import calendar as cal
from ejlb.control import capacity as cap
from ejlb.control.sim import Scenario, WorkerSpec, simulate, summarize

P = cap.Params()
# whole-loop properties: a few examples each, no shrinking (each example is a minutes-long simulation)
SLOW = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


# -- slot counts ---------------------------------------------------------------------------------
def test_leftover_slots_follow_weight_when_one_worker_is_capped():
    # the deployed rule gives [340, 86, 86]: the capped worker's surplus went one slot each
    assert cal.slot_counts([2900, 99, 1], [0.1] * 3, [2.0] * 3) == [340, 155, 17]


@given(st.lists(st.floats(0.01, 1000), min_size=1, max_size=40), st.data())
def test_slot_counts_proportional_within_a_slot_and_bounded(weights, data):
    n = len(weights)
    mins = data.draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0]), min_size=n, max_size=n))
    maxs = data.draw(st.lists(st.sampled_from([0.0, 1.5, 2.0, 4.0]), min_size=n, max_size=n))
    counts = cal.slot_counts(weights, mins, maxs, min_slots=1)
    assert sum(counts) == 512
    even = 512 // n
    lo = [max(round(even * m), 1) for m in mins]
    hi = [round(even * x) if x else 512 for x in maxs]
    feasible = sum(lo) <= 512 and sum(max(h, l) for h, l in zip(hi, lo)) >= 512
    if feasible:
        assert all(lo_ <= c <= max(h, lo_) for c, lo_, h in zip(counts, lo, hi))
    free = [i for i in range(n) if lo[i] < counts[i] < hi[i]]  # not at a bound: one rate for all of them
    if feasible:  # every count is within a slot of weight x the same rate: (c_i + 1)/w_i > rate > (c_j - 1)/w_j
        assert all((counts[i] + 1) / weights[i] > (counts[j] - 1) / weights[j] for i in free for j in free)


@given(st.lists(st.floats(0.01, 1000), min_size=2, max_size=20))
def test_slot_counts_monotone_in_weight(weights):
    counts = cal.slot_counts(weights, min_slots=1)
    order = np.argsort(weights, kind="stable")
    assert all(counts[a] <= counts[b] for a, b in zip(order, order[1:]) if weights[a] < weights[b])
    assert min(counts) >= 1


# -- the meter and the estimate ------------------------------------------------------------------
def test_meter_measures_capacity_only_while_the_queue_stays_non_empty():
    m = cap.Meter()
    deq = off = 0
    for k in range(11):  # 1 s: busy for the last 0.5 s at 100 events/s, 300/s offered
        busy = k > 5
        m.observe(k * 0.1, 0.3 if busy else 0.0, deq, off, 0)
        deq += 10
        off += 30 if busy else 10
    w = m.take()
    assert w.seconds == pytest.approx(1.0)
    assert w.busy_s == pytest.approx(0.4)  # four intervals with a non-empty queue at both ends
    assert cap.measured_rate(w, P) == pytest.approx(100.0)
    assert m.take() is None  # a window needs two reports


def test_meter_skips_an_interval_whose_counters_went_back():
    m = cap.Meter()
    m.observe(0.0, 0.5, 1000, 1000, 5)
    m.observe(0.1, 0.5, 3, 3, 0)  # the worker restarted
    m.observe(0.2, 0.5, 13, 13, 0)
    w = m.take()
    assert (w.busy_s, w.busy_dequeued, w.offered) == (pytest.approx(0.1), 10, 10)


def test_estimate_never_falls_below_what_was_offered_and_a_measurement_overrides():
    e = cap.Estimate(capacity=50.0)
    cap.observe(e, cap.Window(0, 1, offered=80), 1.0, True, P)
    assert (e.capacity, e.exact, e.headroom) == (80.0, False, True)
    cap.observe(e, cap.Window(1, 2, busy_s=0.9, busy_dequeued=27, offered=90, fill=0.5), 2.0, True, P)
    assert (e.capacity, e.exact, e.measured_at, e.discovering) == (pytest.approx(30.0), True, 2.0, False)


def test_operators_see_no_capacity_until_one_is_observed():
    e = cap.Estimate(capacity=4.0)  # a registered-weight prior, not events/s
    assert cap.observed(e) == 0.0
    cap.observe(e, cap.Window(0, 1, offered=80), 1.0, True, P)
    assert cap.observed(e) == 80.0


def test_prior_puts_a_newcomer_at_its_registered_weight_in_known_units():
    ws = [cap.Worker(0, 4.0), cap.Worker(1, 2.0), cap.Worker(2, 1.0)]
    ests = {0: cap.Estimate(capacity=400.0), 1: cap.Estimate(capacity=200.0), 2: cap.Estimate()}
    cap.seed(ws, ests)
    assert ests[2].capacity == pytest.approx(100.0)


def test_desired_keeps_measured_workers_below_max_utilisation_while_others_have_headroom():
    ws = [cap.Worker(0, 1.0), cap.Worker(1, 0.5)]  # 1: a lower bound above its weight's worth (50)
    ests = {0: cap.Estimate(capacity=100.0, exact=True), 1: cap.Estimate(capacity=60.0)}
    load = cap.desired(ws, ests, 150.0, P)
    assert load[0] == pytest.approx(P.max_utilisation * 100.0)
    assert load[1] == pytest.approx(150.0 - P.max_utilisation * 100.0)
    ests[1].exact = True  # all measured, overloaded: proportional, losses spread by capacity
    load = cap.desired(ws, ests, 320.0, P)
    assert load[0] / load[1] == pytest.approx(100.0 / 60.0)


def test_without_a_measured_worker_registered_weights_set_the_shares():
    ws = [cap.Worker(0, 3.0), cap.Worker(1, 1.0)]
    ests = {0: cap.Estimate(capacity=10.0), 1: cap.Estimate(capacity=90.0)}  # who was offered what
    load = cap.desired(ws, ests, 100.0, P)
    assert load[0] / load[1] == pytest.approx(3.0)


def test_hysteresis_ignores_noise_but_not_an_urgent_move():
    """Urgent: an overflowing worker losing slots, a worker under discovery / probe gaining them."""
    quiet = [False] * 3
    assert not cap.significant([200, 200, 112], [203, 198, 111], quiet, quiet, P)
    assert cap.significant([200, 200, 112], [230, 180, 102], quiet, quiet, P)
    assert cap.significant([200, 200, 112], [201, 201, 110], [False, False, True], quiet, P)
    assert cap.significant([500, 7, 5], [499, 8, 5], quiet, [False, True, False], P)
    assert not cap.significant([500, 7, 5], [501, 6, 5], quiet, [False, True, False], P)


def test_a_discovery_step_moves_a_small_worker_by_at_least_a_slot():
    ws = [cap.Worker(0, 1.0), cap.Worker(1, 1.0)]
    ests = {0: cap.Estimate(capacity=1000.0, exact=True, discovering=False),
            1: cap.Estimate(capacity=2.0, discovering=True, headroom=True, offered=2.0)}
    cap.discover(ws, ests, 1002.0, 0.0, P)
    assert ests[1].target >= 2.0 + 1002.0 / 512


# -- the whole loop in the simulator -------------------------------------------------------------
def shares_near(trace, tail_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Median slot share, capacity share, and fraction of samples within ±10 % over the last tail_s."""
    a = trace.arrays()
    idx = a["t"] >= a["t"][-1] - tail_s
    slot, capshare = a["slot_share"][idx], a["capacity_share"][idx]
    ok = np.all(np.abs(slot - capshare) <= 0.10 * capshare + 1e-9, axis=1)
    return np.median(slot, axis=0), capshare[-1], float(ok.mean())


capacities = st.lists(st.integers(60, 600), min_size=2, max_size=4).filter(
    lambda c: max(c) / sum(c) <= 0.5)  # every worker can be saturated at the loads drawn below


@SLOW
@given(capacities, st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]), min_size=4, max_size=4),
       st.floats(0.8, 0.9))
def test_converges_to_capacity_shares_from_any_registered_weights(caps, weights, load):
    trace = simulate(Scenario([WorkerSpec(c, weight=w) for c, w in zip(caps, weights)], load=load, duration=90))
    median, target, in_band = shares_near(trace, 40)
    assert np.all(np.abs(median - target) <= 0.10 * target + 1 / 512), (median, target)
    assert in_band >= 0.6  # probes leave the band for a tick or two, by design
    lost = trace.arrays()["lost"]
    t = trace.arrays()["t"]
    assert np.nansum(lost[-1]) - np.nansum(lost[np.searchsorted(t, 30)]) == 0  # nothing lost once settled


@SLOW
@given(capacities, st.randoms(use_true_random=False))
def test_history_independence(caps, rnd):
    """Two histories that end with the same capacities end with the same shares."""
    before = [c * rnd.choice([0.25, 0.5, 2.0, 4.0]) for c in caps]
    a = simulate(Scenario([WorkerSpec(c) for c in caps], rate=0.85 * sum(caps), duration=60))
    b = simulate(Scenario([WorkerSpec(x, speed=((40.0, c),)) for x, c in zip(before, caps)],
                         rate=0.85 * sum(caps), duration=40 + 180))
    sa, target, _ = shares_near(a, 20)
    sb, _, _ = shares_near(b, 20)
    assert np.all(np.abs(sa - sb) <= 0.10 * target + 1 / 512), (sa, sb, target)


def test_late_joiner_gets_its_registered_weight_from_its_first_epoch():
    trace = simulate(Scenario([WorkerSpec(400, weight=4), WorkerSpec(200, weight=2),
                               WorkerSpec(100, weight=1, join=20)], rate=0.75 * 700, duration=30))
    a = trace.arrays()
    first = int(np.argmax(a["slot_share"][:, 2] > 0))
    assert a["slot_share"][first, 2] == pytest.approx(1 / 7, abs=2 / 512)


def test_registered_weights_shape_the_first_calendar():
    trace = simulate(Scenario([WorkerSpec(300, weight=w) for w in (3, 1, 1)], load=0.5, duration=3))
    a = trace.arrays()
    first = int(np.argmax(a["slot_share"].sum(axis=1) > 0))
    assert a["slot_share"][first] * 512 == pytest.approx(np.array(cal.slot_counts([3, 1, 1])), abs=1)


def test_slowdown_is_followed_within_three_epochs_without_loss():
    trace = simulate(Scenario([WorkerSpec(500), WorkerSpec(250), WorkerSpec(125, speed=((40, 31.25),))],
                              duration=80))
    s = summarize(trace, [40])
    assert s["phases"][1]["epochs_to_band"] is not None and s["phases"][1]["epochs_to_band"] <= 3
    assert s["lost"] == 0


def test_speedup_is_found_by_probing():
    trace = simulate(Scenario([WorkerSpec(500), WorkerSpec(250), WorkerSpec(125, speed=((40, 500),))],
                              duration=200))
    median, target, _ = shares_near(trace, 30)
    assert median[2] >= 0.9 * target[2]


def test_steady_state_changes_only_for_probes():
    trace = simulate(Scenario([WorkerSpec(300)] * 3, duration=240))
    a = trace.arrays()
    late = a["t"] >= 60
    changes = a["epoch"][late][-1] - a["epoch"][late][0]
    assert changes <= 2 * (180 / P.probe_quiet_s) + 2  # a probe costs two calendars; nothing else moves
    quiet = a["slot_share"][late][np.all(a["fill"][late] == 0, axis=1)]
    assert (np.abs(quiet - 1 / 3) <= 0.10 / 3).mean() >= 0.8


def test_overload_spreads_losses_in_proportion_to_capacity():
    caps = (500, 250, 125)
    trace = simulate(Scenario([WorkerSpec(c) for c in caps], load=1.2, duration=60))
    a = trace.arrays()
    t = a["t"]
    lost = a["lost"][-1] - a["lost"][np.searchsorted(t, 20)]
    assert lost / lost.sum() == pytest.approx(np.array(caps) / sum(caps), abs=0.05)
    assert np.all(a["fill"][-1] > 0.5)  # nobody idles while others overflow


def test_a_floor_that_pins_a_worker_into_overflow_is_reported():
    trace = simulate(Scenario([WorkerSpec(600), WorkerSpec(600), WorkerSpec(30, min_factor=1.0)],
                              load=0.7, duration=20))
    assert "worker_overflow_at_floor" in trace.health[-1][2]
    assert trace.arrays()["lost"][-1][2] > 0 and not trace.health[-1][0]


@pytest.mark.parametrize("balancer", ["capacity", "signal"])
def test_capacity_beats_the_deployed_rule_on_heterogeneous_workers(balancer):
    """Same scenario, three laws: the capacity balancer loses nothing after start-up where the
    deployed rule with E2SAR's zero gains overflows the slow worker for good."""
    zero = dict(pid=(0.0, 0.0, 0.0), min_factor=0.5, max_factor=2.0)
    workers = [WorkerSpec(c, **(zero if balancer == "signal" else {})) for c in (500, 250, 125)]
    lost = np.nansum(simulate(Scenario(workers, balancer=balancer, duration=40)).arrays()["lost"][-1])
    if balancer == "capacity":
        assert lost == 0
    else:
        assert lost > 0.05 * 0.75 * 875 * 40
