"""`ejlb demo`: the embeddable core (ejlb.demo) end to end on loopback, its table arithmetic, and
the command itself through a subprocess."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, strategies as st

from cli_helpers import ejlb
from ejlb.demo import (DemoConfig, DemoError, Sample, WorkerCounts, lb_figures, pattern, run_demo, summarize,
                       time_average)
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


def test_summarize_with_speeds_gives_capacity_shares_drops_and_second_half_slot_shares():
    counts = [WorkerCounts("a", events=100, bytes=100_000, bad_events=0, lost=0, slots=100, dropped=20),
              WorkerCounts("b", events=280, bytes=280_000, bad_events=0, lost=0, slots=412)]
    # Slots (a, b): 256/256 from 0 s, 128/384 from 3 s, 100/412 from 6 s; the run lasts 8 s, so the
    # second half (4..8 s) holds 128/384 for 2 s and 100/412 for 2 s.
    samples = [Sample(0.0, (256, 256), (0.0, 0.0), (0, 0)), Sample(3.0, (128, 384), (0.9, 0.1), (5, 0)),
               Sample(6.0, (100, 412), (0.5, 0.0), (20, 0))]
    r = summarize("3", events_sent=400, event_size=1000, workers=counts, elapsed_s=8.0, speeds=(1, 3),
                  samples=samples, balancer="capacity", load=0.8, event_rate=50.0)
    a, b = r.workers
    assert (a.capacity_share, b.capacity_share) == (0.25, 0.75) and (a.speed, b.speed) == (1, 3)
    assert a.slot_share == 100 / CALENDAR_SLOTS and b.slot_share == 412 / CALENDAR_SLOTS
    assert a.slot_share_avg == pytest.approx((128 + 100) / 2 / CALENDAR_SLOTS)
    assert b.slot_share_avg == pytest.approx((384 + 412) / 2 / CALENDAR_SLOTS)
    assert a.slot_share_avg + b.slot_share_avg == pytest.approx(1.0)
    assert (a.dropped, b.dropped, r.dropped) == (20, 0, 20)
    assert r.events_missing == 20 and not r.ok and r.accounted  # every missing event was a queue drop
    assert r.speeds == (1, 3) and r.balancer == "capacity" and r.samples == samples
    assert r.base_service_time == pytest.approx(0.8 * 4 / 50.0)  # capacity 4 / base = 50 / 0.8 events/s
    # Without speeds or samples the new columns are absent, not invented.
    plain = summarize("3", 380, 1000, counts, 8.0)
    assert all(w.capacity_share is None and w.slot_share_avg is None and w.speed is None for w in plain.workers)
    assert plain.base_service_time is None and plain.load is None
    with pytest.raises(ValueError, match="one per worker"):
        summarize("3", 380, 1000, counts, 8.0, speeds=(1, 2, 3))


def test_time_average_of_a_step_series():
    series = [(0.0, [1.0, 0.0]), (2.0, [0.0, 1.0]), (3.0, [0.5, 0.5])]
    assert time_average(series, 0.0, 4.0) == pytest.approx([(2 + 0 + 0.5) / 4, (0 + 1 + 0.5) / 4])
    assert time_average(series, 2.5, 3.5) == pytest.approx([0.25, 0.75])
    assert time_average([(1.0, [2.0])], 0.0, 4.0) == [2.0]  # the first sample stands for the time before it
    assert time_average(list(reversed(series)), 0.0, 4.0) == time_average(series, 0.0, 4.0)
    assert time_average([], 0.0, 1.0) is None and time_average(series, 1.0, 1.0) is None


def test_config_speeds_set_the_workers_and_the_service_times():
    c = DemoConfig(speeds=(1, 2, 4), load=0.7, event_rate=100.0)
    assert c.workers == 3 and c.speeds == (1, 2, 4)
    assert c.base_service_time == pytest.approx(0.7 * 7 / 100)
    assert c.service_times() == pytest.approx([0.049, 0.0245, 0.01225])
    # Total capacity sum(speed / base) is event_rate / load.
    assert sum(1 / t for t in c.service_times()) == pytest.approx(100 / 0.7)
    assert DemoConfig(speeds=[2, 2], workers=2).speeds == (2, 2)
    assert DemoConfig().workers == 3 and DemoConfig().service_times() == [None] * 3


@pytest.mark.parametrize("kwargs, field", [
    ({"speeds": (0, 1)}, "speeds=(0, 1)"), ({"speeds": ()}, "speeds=()"), ({"speeds": "12"}, "speeds='12'"),
    ({"speeds": (1, float("nan"))}, "speeds=(1, nan)"), ({"speeds": (1, 2), "workers": 3}, "workers=3 conflicts"),
    ({"load": 0}, "load=0"), ({"load": 2}, "load=2"), ({"event_rate": 0}, "event_rate=0"),
    ({"balancer": "fastest"}, "balancer='fastest'"), ({"queue_size": 0}, "queue_size=0"),
])
def test_config_rejects_bad_speed_settings_naming_them(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(")", r"\)")):
        DemoConfig(**kwargs)


def test_human_table_with_speeds(capsys):
    import ejlb.cli.main  # noqa: F401  (the CLI package loads its command modules from there)
    from ejlb.cli.cmd_demo import _print_table

    counts = [WorkerCounts("worker-1", 10, 10_000, 0, 0, 128, dropped=2),
              WorkerCounts("worker-2", 30, 30_000, 0, 0, 384)]
    samples = [Sample(0.0, (256, 256), (0.0, 0.0), (0, 0))]
    _print_table(summarize("1", 42, 1000, counts, 1.0, speeds=(1, 3), samples=samples, balancer="signal",
                           load=0.75, event_rate=500.0), "out.png")
    out = capsys.readouterr().out
    for text in ("capacity share", "2nd-half avg", "queue full", "25.0%", "75.0%", "50.0%", "balancer signal",
                 "speeds 1,3", "except 2 dropped by full worker queues", "plot written to out.png"):
        assert text in out, (text, out)
    _print_table(summarize("1", 40, 1000, counts, 1.0))
    plain = capsys.readouterr().out
    assert "│              - │" in plain and "except" not in plain


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
    # Three workers share the calendar's 512 slots (how evenly is the balancer's business, tested there).
    assert sum(w.slots for w in result.workers) == CALENDAR_SLOTS
    assert all(w.slots >= 1 for w in result.workers)
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


@pytest.mark.parametrize("args, words", [
    (("--speeds", "0,1"), ("--speeds", "'0,1'", "'0' is not a positive number")),
    (("--speeds", "a"), ("--speeds", "'a'", "not a positive number")),
    (("--speeds", "1,,2"), ("--speeds", "'1,,2'")),
    (("--load", "0"), ("--load", "0")),
    (("--load", "2"), ("--load", "2")),
    (("--workers", "2", "--speeds", "1,2,4"), ("--workers 2", "--speeds 1,2,4", "conflicts")),
    (("--balancer", "fastest"), ("--balancer", "fastest")),
    (("--plot", "/nonexistent-dir/x.png"), ("--plot", "/nonexistent-dir")),
])
def test_ejlb_demo_bad_speed_arguments_are_usage_errors(args, words):
    r = ejlb("demo", *args, timeout=30)
    assert r.code == 2, (r.code, r.err)
    for word in words:
        assert word in r.err, (word, r.err)
    assert "Traceback" not in r.err


def test_ejlb_demo_with_speeds_json_table_and_plot(tmp_path):
    """End to end with slow workers: the fields are there and consistent. Nothing is asserted about
    how well the calendar follows the capacities (that is the balancer's business, tested there)."""
    png = tmp_path / "demo.png"
    r = ejlb("--json", "demo", "--speeds", "1,3", "-n", "300", "-s", "16k", "--event-rate", "400",
             "--plot", str(png), timeout=60)
    assert r.code == 0, r.err
    out = r.json()
    summary, workers = out["summary"], out["workers"]
    assert out["ok"] is True and out["plot"] == str(png)
    assert summary["speeds"] == [1.0, 3.0] and summary["balancer"] == "capacity" and summary["load"] == 0.75
    assert summary["event_rate"] == 400 and summary["base_service_time"] == pytest.approx(0.75 * 4 / 400)
    assert [w["name"] for w in workers] == ["worker-1", "worker-2"]
    assert [w["capacity_share"] for w in workers] == [0.25, 0.75]
    assert sum(w["slots"] for w in workers) == CALENDAR_SLOTS
    assert sum(w["slot_share"] for w in workers) == pytest.approx(1.0)
    assert sum(w["slot_share_avg"] for w in workers) == pytest.approx(1.0, abs=0.01)
    # Every event is either delivered whole or counted as dropped by a full queue.
    assert summary["dropped"] == sum(w["dropped"] for w in workers)
    assert summary["events_received"] + summary["dropped"] == summary["events_sent"] == 300
    assert all(w["lost"] == 0 and w["bad_events"] == 0 for w in workers)
    samples = out["samples"]
    assert samples and samples[0]["t"] < 0.1
    assert all(len(s["slots"]) == len(s["fill"]) == len(s["dropped"]) == 2 for s in samples)
    assert all(0.0 <= f <= 1.0 for s in samples for f in s["fill"])
    data = png.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


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
