"""`ejlb demo`: the embeddable core (ejlb.demo) end to end on loopback, its table arithmetic, and
the command itself through a subprocess."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from cli_helpers import ejlb
from ejlb.demo import DemoConfig, DemoError, WorkerCounts, lb_figures, pattern, run_demo, summarize
from ejlb.dataplane.tables import Counters
from ejlb.wire import CALENDAR_SLOTS, fragment_count, max_payload


def test_summarize_computes_shares_rates_and_missing_events():
    counts = [WorkerCounts("a", events=30, bytes=30_000, bad_events=0, lost=1, slots=128),
              WorkerCounts("b", events=10, bytes=10_000, bad_events=2, lost=0, slots=384)]
    r = summarize("7", events_sent=45, event_size=1000, workers=counts, elapsed_s=0.5)
    assert (r.events_received, r.events_missing, r.lost, r.bad_events) == (40, 5, 1, 2)
    assert r.bytes_sent == 45_000 and not r.ok
    a, b = r.workers
    assert a.slot_share == 128 / CALENDAR_SLOTS and b.slot_share == 384 / CALENDAR_SLOTS
    assert a.event_share == 0.75 and b.event_share == 0.25
    assert a.gbps == pytest.approx(30_000 * 8 / 0.5 / 1e9) and r.gbps == pytest.approx(40_000 * 8 / 0.5 / 1e9)
    clean = summarize("7", 40, 1000, [WorkerCounts("a", 40, 40_000, 0, 0, 512)], 1.0)
    assert clean.ok and clean.events_missing == 0


@given(st.integers(0, 5000), st.integers(0, 10**6))
def test_pattern_bytes(length, seed):
    got = pattern(length, seed)
    assert got.dtype == np.uint8 and got.shape == (length,)
    assert np.array_equal(got, (np.arange(length) + seed) % 251)


def test_lb_figures_sum_members_of_that_lb_and_keep_nonzero_drops():
    c = Counters()
    c.lb_counters(0).update(rx_packets=10, drop_epoch_miss=2)
    c.lb_counters(1).update(rx_packets=99, drop_ttl=5)
    c.member_counters(0, 0)["tx_packets"] = 5
    c.member_counters(0, 3)["tx_packets"] = 3
    c.member_counters(1, 0)["tx_packets"] = 50
    c.glob["drop_not_lb"] = 1
    f = lb_figures(c, 0)
    assert (f.rx_packets, f.tx_packets) == (10, 8)
    assert f.drops == {"drop_not_lb": 1, "drop_epoch_miss": 2}


@pytest.mark.parametrize("kwargs, field", [
    ({"events": 0}, "events=0"), ({"workers": 0}, "workers=0"), ({"size": -1}, "size=-1"),
    ({"mtu": 64}, "mtu=64"), ({"mtu": 9001}, "mtu=9001"), ({"rate_gbps": -1.0}, "rate_gbps=-1.0"), ({"events": True}, "events=True"),
    ({"settle_timeout": -1}, "settle_timeout=-1"), ({"drain_timeout": "5"}, "drain_timeout='5'"),
])
def test_config_rejects_bad_values_naming_them(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        DemoConfig(**kwargs)


def test_run_demo_delivers_every_event_whole_and_cleans_up():
    before = threading.active_count()
    stages: list[tuple[str, int, int]] = []
    config = DemoConfig(events=90, size=48 * 1024 + 7, workers=3, rate_gbps=0.5, mtu=1500)
    result = run_demo(config, on_progress=lambda *a: stages.append(a))

    assert result.ok, result
    assert result.events_sent == result.events_received == 90
    assert sum(w.events for w in result.workers) == 90
    assert sum(w.bytes for w in result.workers) == 90 * config.size
    assert [w.name for w in result.workers] == ["worker-1", "worker-2", "worker-3"]
    # Three equal workers share the calendar: 512 slots, each within the 0.5..2 x even-share factors.
    assert sum(w.slots for w in result.workers) == CALENDAR_SLOTS
    assert all(85 <= w.slots <= 342 for w in result.workers)
    assert all(w.events > 0 for w in result.workers)  # P(a worker gets none of 90) ~ 1e-15
    assert sum(w.slot_share for w in result.workers) == pytest.approx(1.0)
    assert result.gbps > 0
    # Every datagram went through the software LB and was forwarded, none dropped.
    datagrams = 90 * fragment_count(config.size, max_payload(config.mtu))
    assert result.lb.rx_packets == result.lb.tx_packets == datagrams and result.lb.drops == {}
    assert ("send", 90, 90) in stages and ("drain", 90, 90) in stages
    assert [s for s in stages if s[0] == "setup"][-1] == ("setup", 4, 4)
    # Receivers, drains, sender, sync listener, controller, RPC pool and LB threads are all gone.
    def ours():
        return [t.name for t in threading.enumerate()]

    for _ in range(50):
        if len(ours()) <= before:
            break
        threading.Event().wait(0.1)
    assert len(ours()) <= before, ours()


def test_a_failed_step_is_named_and_everything_is_cleaned_up():
    def ours():
        return [t.name for t in threading.enumerate()]

    before = len(ours())
    with pytest.raises(DemoError, match="calendar slots within 0 s"):
        run_demo(DemoConfig(events=1, workers=2, settle_timeout=0.0))
    for _ in range(50):
        if len(ours()) <= before:
            break
        threading.Event().wait(0.1)
    assert len(ours()) <= before, ours()


def test_ejlb_demo_json_table():
    r = ejlb("--json", "demo", "--events", "60", "--size", "20k", "--workers", "2", "--rate", "0.5", timeout=60)
    assert r.code == 0, r.err
    out = r.json()
    assert out["ok"] is True
    assert out["summary"]["events_sent"] == out["summary"]["events_received"] == 60
    assert out["summary"]["bytes_sent"] == 60 * 20_000
    workers = out["workers"]
    assert [w["name"] for w in workers] == ["worker-1", "worker-2"]
    assert sum(w["events"] for w in workers) == 60 and sum(w["slots"] for w in workers) == CALENDAR_SLOTS
    assert all(w["lost"] == 0 and w["bad_events"] == 0 for w in workers)
    lb = out["loadBalancer"]
    assert lb["rx_packets"] == lb["tx_packets"] >= 60 and lb["drops"] == {}


def test_ejlb_demo_human_table_and_bad_arguments():
    r = ejlb("demo", "-n", "30", "-s", "8k", timeout=60)
    assert r.code == 0, r.err
    assert "30 events sent" in r.out and "every event arrived whole" in r.out
    assert "forwarded to workers, none dropped" in r.out
    for name in ("worker-1", "worker-2", "worker-3", "total"):
        assert name in r.out
    bad = ejlb("demo", "--workers", "0")
    assert bad.code == 2 and "--workers" in bad.err
    bad_size = ejlb("demo", "--size", "lots")
    assert bad_size.code == 2 and "not a size" in bad_size.err


def test_ctrl_c_stops_the_demo_cleanly_with_exit_130():
    import os
    import signal
    import subprocess
    import time

    from cli_helpers import EJLB

    env = {k: v for k, v in os.environ.items() if k != "EJFAT_URI"}
    p = subprocess.Popen([EJLB, "demo", "-n", "1000000", "-s", "10k", "-r", "0.05"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3)  # mid-stream: control plane, LB, workers and sender all running
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
