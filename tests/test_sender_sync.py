"""Sync packets: the pure schedule, then a Sender's sync thread captured on loopback."""
import threading
import time

import pytest

from ejlb.shim.sender import Sender
from ejlb.shim.sync import SyncSchedule
from ejlb.errors import ArgumentError
from ejlb.wire import SYNC_HEADER_LEN, TICK_RATE_HZ, SyncHeader, WireError
from sender_tools import Capture


def test_schedule_keeps_a_fixed_grid():
    s = SyncSchedule(1.0, start=100.0)
    assert s.fire(100.0)  # one right away
    assert not s.fire(100.5) and s.wait(100.5) == pytest.approx(0.5)
    assert s.fire(101.3)  # late wake-up: the grid does not drift
    assert s.wait(101.3) == pytest.approx(0.7)
    assert s.fire(104.9)  # missed 102, 103, 104: one packet, not a burst
    assert not s.fire(104.95)
    assert s.next == pytest.approx(105.0)


@pytest.mark.parametrize("period", [0, -1, 10.5, "soon", None])
def test_schedule_rejects_bad_periods(period):
    with pytest.raises(ArgumentError) as e:
        SyncSchedule(period, 0.0)
    assert e.value.field == "sync_period"


def test_sender_sends_valid_sync_packets_at_the_period():
    period = 0.05
    with Capture() as cap:
        uri = f"ejfat://lb.example:18347/lb/1?data=127.0.0.1:19522&sync=127.0.0.1:{cap.port}"
        with Sender(uri, event_src_id=0xC0FFEE, sync_period=period) as s:
            time.sleep(0.52)
            n_sent = s.stats().sync_packets
        dgrams = cap.take(timeout=0.1)
    assert 5 <= len(dgrams) <= 12  # one at start, then every 50 ms for 0.52 s (fewer if starved)
    assert n_sent == len(dgrams) or n_sent + 1 == len(dgrams)
    now_ns = time.time_ns()
    stamps = []
    for d in dgrams:
        assert len(d.data) == SYNC_HEADER_LEN
        h = SyncHeader.decode(d.data)
        assert h.event_src_id == 0xC0FFEE and h.avg_event_rate_hz == TICK_RATE_HZ
        assert 0 < now_ns - h.unix_time_ns < 2e9
        assert abs(h.event_number - h.unix_time_ns // 1000) < 1000_000  # the tick of "now", in µs
        stamps.append(h.unix_time_ns)
    scapy = pytest.importorskip("ejlb.scapy")
    p = scapy.Sync(dgrams[-1].data)
    assert (p.magic, p.version, p.event_src_id, p.avg_event_rate_hz) == (b"LC", 2, 0xC0FFEE, TICK_RATE_HZ)
    gaps = sorted((b - a) / 1e9 for a, b in zip(stamps, stamps[1:]))
    assert gaps[len(gaps) // 2] == pytest.approx(period, rel=0.3)


def test_sync_with_caller_ticks_reports_last_tick_and_event_rate():
    with Capture() as cap, Capture() as data:
        uri = f"ejfat://lb.example:18347/lb/1?data=127.0.0.1:{data.port}&sync=127.0.0.1:{cap.port}"
        with Sender(uri, sync_period=0.2) as s:
            cap.take(1)  # the packet sent at start
            for t in range(1000, 1100):
                s.send(b"e", tick=t)
            (d,) = cap.take(1, timeout=1.0)
    h = SyncHeader.decode(d.data)
    assert h.event_number == 1099
    assert 100 <= h.avg_event_rate_hz <= 100 / 0.15  # 100 events within one 0.2 s period


def test_no_sync_without_address_or_when_disabled():
    with Capture() as cap:
        with Sender(cap.uri(), sync_period=0.01) as s:  # URI without sync=
            time.sleep(0.05)
            assert s.stats().sync_packets == 0
        with Sender(cap.uri(sync=f"127.0.0.1:{cap.port}"), sync=False, sync_period=0.01) as s:
            time.sleep(0.05)
            assert s.stats().sync_packets == 0
        assert cap.take(timeout=0.05) == []


def test_the_control_planes_sync_listener_accepts_our_packets():
    from ejlb.control.sync import SyncListener

    got, arrived = [], threading.Event()

    def accept(rid, src, sample):
        got.append((rid, src, sample))
        arrived.set()
        return True

    listener = SyncListener(accept)
    listener.start()
    try:
        port = listener.open(7, {4: "127.0.0.1"}, 0)
        uri = f"ejfat://lb.example:18347/lb/1?data=127.0.0.1:19522&sync=127.0.0.1:{port}"
        with Sender(uri, event_src_id=42, sync_period=0.05):
            assert arrived.wait(5)
    finally:
        listener.stop()
    rid, src, sample = got[0]
    assert (rid, src, sample.src_id, sample.rate_hz) == (7, "127.0.0.1", 42, TICK_RATE_HZ)
    assert abs(sample.event_number - time.time_ns() // 1000) < 5_000_000
    assert listener.malformed == 0
