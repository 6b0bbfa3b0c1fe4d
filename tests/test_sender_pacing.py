"""Pacing: the token bucket on a simulated clock (exact), then a real paced Sender on loopback."""
import random
import time

import pytest

from ejlb.shim.pacing import TokenBucket
from ejlb.shim.sender import MIN_SLEEP_S, Sender
from ejlb.errors import ArgumentError
from sender_tools import Capture


def simulate(rate_gbps: float, event_bytes: int, seconds: float, *, jitter: float, seed: int = 0) -> float:
    """Drive the bucket the way Sender does, with a clock whose sleeps overshoot by up to
    `jitter` seconds and whose sends take as long as the bytes need at 40 Gb/s; return the Gb/s
    from the first send's start to the last send's start."""
    rng = random.Random(seed)
    bucket, now, start, n = TokenBucket(rate_gbps), 0.0, 0.0, 0
    while start < seconds:
        wait = bucket.reserve(event_bytes, now)
        if wait > MIN_SLEEP_S:
            now += wait + rng.uniform(0, jitter)
            bucket.started(now)
        start = now
        n += 1
        now += event_bytes * 8 / 40e9
    return (n - 1) * event_bytes * 8 / start / 1e9


CASES = [(r, b, j) for r in (0.1, 0.5, 1, 3, 10) for b in (64_000, 1 << 20) for j in (1e-3, 20e-3)]
CASES += [(r, 1000, 1e-3) for r in (0.1, 1)]


@pytest.mark.parametrize("rate, event_bytes, jitter", CASES)  # jitter 20 ms: a crowded machine
def test_average_rate_holds_despite_sleep_jitter(rate, event_bytes, jitter):
    got = simulate(rate, event_bytes, 2.0 if event_bytes > 1000 else 0.3, jitter=jitter)
    assert got == pytest.approx(rate, rel=0.03)


def test_a_caller_slower_than_the_rate_banks_no_credit():
    b = TokenBucket(8.0, burst_s=0.001)  # 1e9 B/s
    now = 0.0
    for _ in range(100):  # the caller offers 1 MB every 2 ms: half the rate
        assert b.reserve(1_000_000, now) == 0.0
        b.started(now)
        now += 0.002
    # then it bursts: only one burst of credit, not the 100 ms it was behind
    waits = [b.reserve(1_000_000, now) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.001, 0.002])


def test_idle_time_banks_at_most_one_burst():
    b = TokenBucket(8.0, burst_s=0.001)  # 1e9 B/s: 1 MB of credit at most
    assert b.reserve(1_000_000, 0.0) == 0.0
    assert b.reserve(1_000_000, 10.0) == 0.0  # long idle ...
    assert b.reserve(1_000_000, 10.0) == 0.0  # ... buys exactly one burst of credit
    assert b.reserve(1_000_000, 10.0) == pytest.approx(0.001)
    assert b.reserve(1_000_000, 10.0) == pytest.approx(0.002)


def test_waits_follow_an_absolute_schedule():
    b = TokenBucket(0.8, burst_s=0)  # 1e8 B/s
    assert b.reserve(1_000_000, 0.0) == 0.0
    assert b.reserve(1_000_000, 0.0) == pytest.approx(0.01)
    # woke up 4 ms late: the next wait is 4 ms shorter, so the average does not sag
    assert b.reserve(1_000_000, 0.014) == pytest.approx(0.006)


@pytest.mark.parametrize("rate", [0, -1, 1e9, "fast", None])
def test_bad_rates_name_the_field(rate):
    with pytest.raises(ArgumentError) as e:
        TokenBucket(rate)
    assert e.value.field == "rate_gbps"


def test_paced_sender_on_loopback_holds_the_rate():
    """Measured over ~2 s of real sends (a rate any loaded machine can reach)."""
    rate, ev = 0.4, bytes(50_000)
    with Capture(rcvbuf=1 << 20) as cap, Sender(cap.uri(), mtu=9000, rate_gbps=rate, sync=False) as s:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            s.send(ev)
        sent = s.stats().bytes
        # the last event was booked to end 1 event-time after its start
        elapsed = time.perf_counter() - t0 + s.layout.udp_bytes(len(ev)) * 8 / (rate * 1e9)
        cap.take(timeout=0)
    assert sent * 8 / elapsed / 1e9 == pytest.approx(rate, rel=0.05)


def test_submit_batches_do_not_defeat_pacing():
    """Queued events are taken in batches, but a paced batch holds one burst at most: 40 events
    queued at once still leave spread out at the rate, not as one batch after one wait."""
    rate, ev = 0.008, bytes(10_000)  # 1 MB/s: one event every ~10 ms
    with Capture() as cap, Sender(cap.uri(), rate_gbps=rate, sync=False, queue_size=64) as s:
        futs = [s.submit(ev) for _ in range(40)]
        arrivals = []
        while len(arrivals) < 40 * s.layout.datagrams(len(ev)):
            got = cap.take(expect=1, timeout=2.0)
            assert got, "events stopped arriving"
            arrivals += [time.perf_counter()] * len(got)
        assert [f.result() for f in futs] == list(range(40))
        per_event = s.layout.udp_bytes(len(ev)) * 8 / (rate * 1e9)
    assert arrivals[-1] - arrivals[0] >= 0.9 * 39 * per_event
