"""The receiver's PID and its default gains, closed over the control plane's own weight and slot
rules (ejlb.control.feedback.step, ejlb.control.calendar.slot_counts): no mocks of the feedback."""
import math

import pytest

from ejlb.control.calendar import slot_counts
from ejlb.control.feedback import Report, initial_weight, step
from ejlb.shim.pid import PID, PIDGains
from ejlb.wire import CALENDAR_SLOTS


def simulate(gains, capacities, load=1000.0, queue=1000, seconds=120, period=0.1):
    """Workers with the given service rates (events/s) share `load` by calendar slots; each reports
    fill + PID signal every `period`; the control plane steps weights once per second. Returns
    (overflowed events per worker, slot shares over the last 30 s)."""
    n = len(capacities)
    pids = [PID(gains) for _ in range(n)]
    weights = [initial_weight(1.0)] * n
    signals = [0.0] * n
    q = [0.0] * n
    overflow = [0.0] * n
    counts = slot_counts(weights, [0.5] * n, [2.0] * n)
    shares = []
    steps_per_tick = round(1 / period)
    for k in range(round(seconds / period)):
        for i in range(n):
            q[i] += load * counts[i] / CALENDAR_SLOTS * period - capacities[i] * period
            if q[i] > queue:
                overflow[i] += q[i] - queue
                q[i] = queue
            q[i] = max(q[i], 0.0)
            signals[i] = pids[i].update(q[i] / queue, period)
        if k % steps_per_tick == steps_per_tick - 1:
            weights = step([Report(w, s, qi / queue) for w, s, qi in zip(weights, signals, q)])
            counts = slot_counts(weights, [0.5] * n, [2.0] * n)
        if k * period >= seconds - 30:
            shares.append([c / CALENDAR_SLOTS for c in counts])
    return overflow, [sum(s[i] for s in shares) / len(shares) for i in range(n)]


def test_default_gains_keep_a_slow_worker_from_overflowing():
    # even split would give the slow worker 500 ev/s against a capacity of 400
    overflow, shares = simulate(PIDGains(), capacities=[400.0, 800.0])
    assert overflow[0] < 1000, overflow  # at most the first transient before the loop reacts
    assert overflow[1] == 0
    assert shares[0] <= 0.42 and shares[1] >= 0.58, shares


def test_zero_gains_like_e2sar_default_overflow():
    overflow, shares = simulate(PIDGains(kp=0, ki=0, kd=0), capacities=[400.0, 800.0])
    assert overflow[0] > 5000
    assert shares == pytest.approx([0.5, 0.5])


def test_equal_workers_keep_equal_shares():
    overflow, shares = simulate(PIDGains(), capacities=[600.0, 600.0])
    assert overflow == [0, 0]
    assert shares == pytest.approx([0.5, 0.5], abs=0.02)


def test_pid_terms():
    pid = PID(PIDGains(kp=2.0, ki=1.0, kd=0.5, integral_tau=math.inf))
    assert pid.update(0.5, 0.1) == pytest.approx(2.0 * -0.5 + 1.0 * -0.05)  # no derivative yet
    out = pid.update(0.7, 0.1)
    assert out == pytest.approx(2.0 * -0.7 + 1.0 * -0.12 + 0.5 * (-0.2 / 0.1))
    pid.reset()
    assert pid.integral == 0.0


def test_integral_forgets_so_a_burst_leaves_no_bias():
    pid = PID(PIDGains(kp=0, ki=1, kd=0, integral_tau=1.0))
    for _ in range(50):
        pid.update(1.0, 0.1)  # 5 s full
    assert pid.update(1.0, 0.1) == pytest.approx(-1.0, rel=0.01)  # steady: error x tau
    for _ in range(100):
        out = pid.update(0.0, 0.1)  # 10 s empty
    assert abs(out) < 1e-3


def test_plain_integral_when_asked():
    pid = PID(PIDGains(kp=0, ki=1, kd=0, integral_tau=math.inf))
    for _ in range(10):
        out = pid.update(1.0, 1.0)
    assert out == pytest.approx(-10.0)


def test_nan_fill_counts_as_full():
    assert PID((1.0, 0.0, 0.0)).update(math.nan, 0.1) == pytest.approx(-1.0)


def test_after_an_overload_the_signal_returns_to_zero():
    # the slow worker catches up after 40 s (capacity 400 -> 800): its signal goes back to 0,
    # so its weight stops moving and no permanent bias remains
    gains = PIDGains()
    pid = PID(gains)
    q, queue = 0.0, 1000
    for k in range(1200):
        capacity = 400.0 if k < 400 else 800.0
        q = min(queue, max(0.0, q + (500.0 - capacity) * 0.1))
        out = pid.update(q / queue, 0.1)
        if k == 399:
            assert out < -50
    assert q == 0 and abs(out) < 1e-6


@pytest.mark.parametrize("bad", [(1, 2), "abc", (1, 2, math.inf), (True, 0, 0)])
def test_bad_gains_name_the_field(bad):
    with pytest.raises(ValueError, match="pid"):
        PID(bad)
