"""The control plane at facility scale: worker reports held in memory between ticks and persisted in
batches (what a tick sees, what a crash loses, nothing lost under concurrent reports and ticks),
the control plane pinned to one core, and the faster pure pieces of the tick checked against the
plain rules they replace. No wall-clock bounds: `benchmarks/bench_control.py` measures speed."""
import math
import os
import sqlite3
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_tools import FakeClock, admin, config, control_plane
from ejlb.control import calendar as cal
from ejlb.control import capacity
from ejlb.control.client import LBManager
from ejlb.control.config import ConfigError
from ejlb.control.state import TOTALS

ADMIN = "admin-" + "0" * 20


# -- the pure pieces against the plain rules -----------------------------------------------------
def bisection(w, lo, hi, slots):
    """The water-filling rate as slot_counts computed it before: 100 halvings."""
    r_lo, r_hi = 0.0, slots / w[w > 0].min() if (w > 0).any() else 1.0
    for _ in range(100):
        r = (r_lo + r_hi) / 2
        if np.clip(r * w, lo, hi).sum() < slots:
            r_lo = r
        else:
            r_hi = r
    return r_hi


weights = st.lists(st.one_of(st.floats(1e-6, 1e6), st.sampled_from([0.0, 1.0, 2.0])), min_size=1, max_size=1100)


@settings(max_examples=300, deadline=None)
@given(weights, st.data())
def test_fill_rate_is_the_float_the_bisection_found(ws, data):
    n, slots = len(ws), 512
    w = np.asarray(ws, dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones(n)
    even = slots // n
    mins = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n, max_size=n)))
    maxs = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 1.5, 2.0]), min_size=n, max_size=n)))
    min_slots = data.draw(st.sampled_from([0, 1]))
    lo = np.maximum(np.rint(even * mins), min_slots if min_slots * n <= slots else 0)
    hi = np.maximum(np.where(maxs > 0, np.rint(even * maxs), slots), lo)
    if lo.sum() > slots:
        lo[:] = 0
    if hi.sum() < slots:
        hi[:] = slots
    assert cal.fill_rate(w, lo, hi, slots) == bisection(w, lo, hi, slots)


def significant_rule(old, new, overflowing, stepping, p):
    return any((n < o and hot) or (n > o and up) or abs(n - o) >= max(p.min_move, math.ceil(p.tolerance * max(o, 1)))
               for o, n, hot, up in zip(old, new, overflowing, stepping))


@given(st.lists(st.tuples(st.integers(0, 512), st.integers(0, 512), st.booleans(), st.booleans()), max_size=60))
def test_significant_is_the_per_worker_rule(rows):
    p = capacity.Params()
    old, new, hot, up = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
    assert capacity.significant(old, new, hot, up, p) == significant_rule(old, new, hot, up, p)


def test_desired_spreads_the_excess_over_open_workers_as_before():
    """The running sum of the open workers' loads replaced a sum per worker: same plan."""
    p = capacity.Params()
    ws = [capacity.Worker(k, 1.0) for k in range(6)]
    ests = {k: capacity.Estimate(capacity=100.0, exact=k < 3, offered=50.0) for k in range(6)}
    ests[4].capacity = 0.0  # an open worker with no load: the excess still reaches every open worker
    plan = capacity.desired(ws, ests, 600.0, p)
    assert sum(plan.values()) == pytest.approx(600.0)
    assert all(plan[k] <= 0.9 * 100.0 + 1e-9 for k in range(3))  # measured: at most max_utilisation


# -- reports between ticks ---------------------------------------------------------------------
def _workers(cp, n):
    m = admin(cp)
    r = m.reserve("scale")
    out = []
    for i in range(n):
        w = LBManager(r.uri, timeout=5.0)
        w.register(f"w{i}", "127.0.0.1", 21000 + i)
        out.append(w)
    return m, r, out


def _stored(db: str) -> dict[str, tuple]:
    with sqlite3.connect(db) as con:
        return {str(row[0]): row[1:] for row in con.execute(
            f"SELECT id, fill, {', '.join(TOTALS)} FROM sessions WHERE removed_at IS NULL")}


def _wait(cond, tries=200):
    import time
    for _ in range(tries):
        if cond():
            return True
        time.sleep(0.025)
    return False


def test_the_tick_sees_the_last_report_of_each_worker(tmp_path):
    db = str(tmp_path / "c.db")
    clock = FakeClock()
    with control_plane(config(db=db), clock=clock) as cp:
        _, _, ws = _workers(cp, 3)
        for k in range(5):  # several reports between two ticks: the last one counts
            for i, w in enumerate(ws):
                w.send_state(fill_percent=0.1 * i + 0.01 * k, control_signal=0.0,
                             totals={"total_events_recv": 100 * i + k})
            clock.advance(0.1)
        assert _stored(db) == {w.session_id: (0.0,) + (0,) * len(TOTALS) for w in ws}  # nothing written yet
        cp.tick()
        res = next(iter(cp.service.reservations.values()))
        row = res.history[-1]
        seen = dict(zip(row.session_ids.tolist(), row.fill.tolist()))
        for i, w in enumerate(ws):
            assert seen[int(w.session_id)] == pytest.approx(0.1 * i + 0.04)
        # the tick handed the same last reports to the writer: one batch, the last values
        expect = {w.session_id: (pytest.approx(0.1 * i + 0.04),) + (100 * i + 4,) + (0,) * (len(TOTALS) - 1)
                  for i, w in enumerate(ws)}
        assert _wait(lambda: _stored(db) == expect), _stored(db)


def test_a_crash_loses_at_most_the_reports_since_the_last_tick(tmp_path):
    """Reports live in memory until the next tick hands them to the writer; a control plane that
    dies before that tick restarts from the previous one's (the workers report again within 100 ms)."""
    db = str(tmp_path / "c.db")
    clock = FakeClock()
    crashed = control_plane(config(db=db), clock=clock)
    cp = crashed.__enter__()
    try:
        _, r, (w,) = _workers(cp, 1)
        w.send_state(fill_percent=0.5, control_signal=0.0, totals={"total_events_recv": 10})
        cp.tick()
        assert _wait(lambda: _stored(db)[w.session_id][1] == 10)
        w.send_state(fill_percent=0.7, control_signal=0.0, totals={"total_events_recv": 20})  # never flushed
        assert _stored(db)[w.session_id][1] == 10
        # a second control plane on the same file (the first one "died": it never ticks again)
        with control_plane(config(db=db), clock=clock) as again:
            sess = again.service.sessions[int(w.session_id)]
            assert sess.totals[0] == 10 and sess.fill == pytest.approx(0.5)
            assert sess.live  # the worker keeps its session and token: its next report goes on
    finally:
        cp.controller._closing = True  # the "dead" plane must not flush the newer report now
        crashed.__exit__(None, None, None)


def test_concurrent_reports_and_ticks_lose_no_counter(tmp_path):
    """8 client threads report for 32 workers over gRPC while another thread ticks as fast as it
    can: every worker's last counters are what it sent last, in memory and on disk."""
    db = str(tmp_path / "c.db")
    rounds, per_thread, threads = 40, 4, 8
    with control_plane(config(db=db)) as cp:
        _, _, ws = _workers(cp, per_thread * threads)
        errors, stop = [], threading.Event()
        cleanup = ws

        def report(mine):
            try:
                for k in range(1, rounds + 1):
                    for w in mine:
                        w.send_state(fill_percent=(k % 10) / 10, control_signal=0.0,
                                     totals={"total_events_recv": k, "total_events_reassembled": 2 * k,
                                             "total_events_dequeued": 3 * k})
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def ticker():
            try:
                while not stop.is_set():
                    cp.tick()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        tick_thread = threading.Thread(target=ticker)
        tick_thread.start()
        senders = [threading.Thread(target=report, args=(ws[i::threads],)) for i in range(threads)]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        stop.set()
        tick_thread.join()
        assert not errors
        for w in ws:
            s = cp.service.sessions[int(w.session_id)]
            assert s.totals[:4] == (rounds, 2 * rounds, 0, 3 * rounds)
        for w in cleanup:
            w.close()
    stored = _stored(db)  # stop() flushed the last tick's and the reports after it
    for w in ws:
        assert stored[w.session_id][1:5] == (rounds, 2 * rounds, 0, 3 * rounds)


# -- one core --------------------------------------------------------------------------------
def test_cpu_pins_the_control_plane_threads_and_restores_the_caller():
    before = os.sched_getaffinity(0)
    core = min(before)
    with control_plane(config(cpu=core), run_controller=True) as cp:
        admin(cp).version()  # a handler thread exists once a call was served
        assert os.sched_getaffinity(0) == before
        names = {"ejlb-controller", "ejlb-report-writer", "ejlb-sync"}
        threads = [t for t in threading.enumerate() if t.name in names or t.name.startswith("ejlb-rpc")]
        assert {t.name for t in threads} >= names and any(t.name.startswith("ejlb-rpc") for t in threads)
        for t in threads:
            assert os.sched_getaffinity(t.native_id) == {core}, t.name


@pytest.mark.parametrize("bad", [-1, True, "0", 1.5])
def test_cpu_must_be_a_core_number(bad):
    with pytest.raises(ConfigError, match="cpu="):
        config(cpu=bad)


def test_cpu_that_is_not_usable_fails_at_start():
    unusable = max(os.sched_getaffinity(0)) + 4096
    with pytest.raises(OSError, match=f"cpu={unusable}"):
        with control_plane(config(cpu=unusable)):
            pass
