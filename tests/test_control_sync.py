"""Sync listener over real UDP (IPv4 and IPv6 loopback): only valid 28-byte Sync packets from the
reservation's allowed senders move the epoch prediction."""
import socket
import time

import pytest

from control_tools import FakeClock, admin, config, control_plane
from ejlb.wire import SyncHeader


def send(payload: bytes, dest, src_ip: str):
    family = socket.AF_INET6 if ":" in src_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((src_ip, 0))
        s.sendto(payload, (str(dest.ip), dest.port))


def wait_for(cond, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def plane():
    clock = FakeClock()
    with control_plane(config(), clock=clock) as cp:
        yield cp, clock


def test_only_allowed_senders_and_valid_packets_count(plane):
    cp, clock = plane
    m = admin(cp)
    r = m.reserve("sync", senders=["127.0.0.1"])
    res = cp.service.reservations[int(r.lb_id)]
    dest = r.uri.sync_address(4)
    good = SyncHeader(7, 5_000_000, 1000, time.time_ns()).encode()

    send(good, dest, "127.0.0.2")  # not on the allow-list
    assert wait_for(lambda: res.sync_rejected == 1)
    for bad in (good[:27], good + b"\0", b"XX" + good[2:], good[:2] + b"\x01" + good[3:]):
        send(bad, dest, "127.0.0.1")
    assert wait_for(lambda: cp.sync.malformed == 4)
    assert res.sync_accepted == 0
    before = m.status(r.lb_id).currentPredictedEventNumber  # from the µs seed sample
    assert abs(before - clock.t * 1e6) < 10

    assert [h.type for h in m.status(r.lb_id).healthIssues] == ["no_sync"]
    send(good, dest, "127.0.0.1")
    assert wait_for(lambda: res.sync_accepted == 1)  # the listener survived the garbage above
    clock.advance(2.0)
    assert m.status(r.lb_id).currentPredictedEventNumber == 5_000_000 + 2 * 1000
    assert m.status(r.lb_id).healthIssues == []
    late = SyncHeader(7, 5_000_000 + 2 * 1000 + 37, 1000, time.time_ns()).encode()
    send(late, dest, "127.0.0.1")
    assert wait_for(lambda: res.sync_accepted == 2)
    assert res.prediction_error == 37  # the sender ran 37 ticks ahead of our extrapolation
    cp.tick()
    assert f'ejlb_lb_prediction_error{{lb="{r.lb_id}"}} 37.0' in cp.metrics.text().decode()
    clock.advance(30.0)
    assert [h.type for h in m.status(r.lb_id).healthIssues] == ["sync_stale"]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
def test_ipv6_listener_and_sender_list_changes(plane):
    cp, clock = plane
    m = admin(cp)
    r = m.reserve("sync6", senders=["127.0.0.1"])
    res = cp.service.reservations[int(r.lb_id)]
    dest = r.uri.sync_address(6)
    pkt = SyncHeader(1, 123, 0, time.time_ns()).encode()
    send(pkt, dest, "::1")
    assert wait_for(lambda: res.sync_rejected == 1)
    m.add_senders(["::1"], r.lb_id)
    send(pkt, dest, "::1")
    assert wait_for(lambda: res.sync_accepted == 1)
    m.free(r.lb_id)  # the listener closes with the reservation
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", dest.port))  # port is free again


def test_poisoned_sync_from_an_allowed_sender_is_rejected_and_counted(plane):
    cp, clock = plane
    m = admin(cp)
    r = m.reserve("poison", senders=["127.0.0.1"])
    res = cp.service.reservations[int(r.lb_id)]
    dest = r.uri.sync_address(4)
    send(SyncHeader(7, 5_000_000, 1000, time.time_ns()).encode(), dest, "127.0.0.1")
    assert wait_for(lambda: res.sync_accepted == 1)
    clock.advance(1.0)
    expected = m.status(r.lb_id).currentPredictedEventNumber
    assert expected == 5_001_000
    for event, rate in ((2**63, 1000), (5_001_000, 4_000_000_000), (5_001_000 + 10**9, 0), (0, 0),
                        (5_001_000, 1_000_000)):
        send(SyncHeader(7, event, rate, time.time_ns()).encode(), dest, "127.0.0.1")
    assert wait_for(lambda: sum(res.sync_outcomes.values()) == 6)
    assert (res.sync_outcomes["rejected_jump"], res.sync_outcomes["rejected_rate"]) == (3, 2)
    assert m.status(r.lb_id).currentPredictedEventNumber == expected  # the prediction did not move
    cp.tick()
    text = cp.metrics.text().decode()
    for outcome, n in (("accepted", 1), ("rejected_jump", 3), ("rejected_rate", 2), ("restarted", 0)):
        assert f'ejlb_lb_sync_packets{{lb="{r.lb_id}",outcome="{outcome}"}} {n}.0' in text
