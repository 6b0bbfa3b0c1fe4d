"""The control loop end to end: gRPC → controller tick → tables → the reference data-plane model.
Liveness and epochs are driven by an injected clock."""
import collections

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from control_tools import FakeClock, admin, config, control_plane
from ejlb.control.client import LBManager
from ejlb.dataplane.backends import ReferenceBackend
from ejlb.dataplane.tables import Drop
from ejlb.wire import LBHeader, REHeader


def frame(tick: int, dport=19522, src="127.0.0.1") -> bytes:
    payload = LBHeader(tick=tick).encode() + REHeader(1, 0, 4, tick).encode() + b"data"
    return bytes(Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:00") / IP(src=src, dst="127.0.0.1", ttl=64)
                 / UDP(sport=5000, dport=dport) / payload)


def delivered(backend, ticks):
    """member id -> number of frames the data plane forwards to it, for these ticks."""
    out = collections.Counter()
    for t in ticks:
        r = backend.process(frame(t))
        out[r.member_id if r.forwarded else Drop(r.verdict).name] += 1
    return out


@pytest.fixture
def loop():
    clock = FakeClock()
    backend = ReferenceBackend()
    with control_plane(config(), backend=backend, clock=clock) as cp:
        m = admin(cp)
        r = m.reserve("loop", senders=["127.0.0.1"])
        yield cp, clock, backend, r


def test_calendar_follows_weights_into_the_data_plane(loop):
    cp, clock, backend, r = loop
    workers = [LBManager(r.uri) for _ in range(3)]
    regs = [w.register(f"w{i}", "127.0.0.1", 20000 + 100 * i, weight=i + 1.0, min_factor=0, max_factor=0)
            for i, w in enumerate(workers)]
    cp.controller.sync_tables()  # what the controller thread does when a reservation changes
    assert backend.process(frame(5)).verdict == Drop.EPOCH_MISS  # reserved, no worker yet
    for w in workers:
        w.send_state(fill_percent=0.1, control_signal=0.0)
    cp.tick()
    t = backend.installed
    assert set(t.lbs) == {0} and (0, __import__("ipaddress").ip_address("127.0.0.1")) in t.senders
    (rng,) = t.epochs.values()
    assert rng.catch_all
    got = delivered(backend, range(512))  # slot = tick mod 512: one frame per slot
    members = {cp.service.sessions[int(reg.session_id)].member_id for reg in regs}
    assert set(got) == members and sorted(got.values()) == [85, 171, 256]
    assert backend.process(frame(7, src="127.0.0.5")).verdict == Drop.BLOCKED_SRC
    # nothing changed: no new epoch, no table writes
    seq = cp.service.reservations[int(r.lb_id)].epochs[-1].seq
    cp.tick()
    assert cp.service.reservations[int(r.lb_id)].epochs[-1].seq == seq


def test_liveness_drop_rules_and_member_reuse(loop):
    cp, clock, backend, r = loop
    res = cp.service.reservations[int(r.lb_id)]
    workers = [LBManager(r.uri) for _ in range(2)]
    regs = [w.register(f"w{i}", "127.0.0.1", 20000 + i) for i, w in enumerate(workers)]
    sessions = [cp.service.sessions[int(g.session_id)] for g in regs]
    for w in workers:
        w.send_state(fill_percent=0.0, control_signal=0.0)
    cp.tick()
    first = res.epochs[-1]
    dead = sessions[1].member_id
    old_tick = first.boundary + 1 + (512 - (first.boundary + 1) % 512) + first.calendar.index(dead)

    clock.advance(2.5)  # worker 1 silent for 2.5 s: not ready, loses its slots in the next epoch
    workers[0].send_state(fill_percent=0.0, control_signal=0.0)
    cp.tick()
    assert len(res.epochs) == 2 and dead not in res.epochs[-1].calendar
    assert not backend.installed.members[(0, dead)].drop  # still registered, still in epoch 0
    assert backend.process(frame(old_tick)).member_id == dead  # in-flight ticks keep the old owner
    new_tick = res.epochs[-1].boundary + 512
    assert backend.process(frame(new_tick)).member_id == sessions[0].member_id
    status = admin(cp).status(r.lb_id)
    assert [x.name for x in status.workers if x.healthIssues] == ["w1"]

    clock.advance(58.0)  # 60.5 s: removed, but epoch 0 still names it -> explicit drop
    workers[0].send_state(fill_percent=0.0, control_signal=0.0)
    cp.tick()
    assert backend.installed.members[(0, dead)].drop
    r_old = backend.process(frame(old_tick))
    assert r_old.verdict == Drop.MEMBER_MISS and "drop rule" in r_old.reason

    # three more calendar changes push epoch 0 out: the member entry and its id are released
    extra = []
    for i in range(3):
        w = LBManager(r.uri)
        w.register(f"x{i}", "127.0.0.1", 21000 + i)
        w.send_state(fill_percent=0.0, control_signal=0.0)
        workers[0].send_state(fill_percent=0.0, control_signal=0.0)
        extra.append(w)
        cp.tick()
    assert len(res.epochs) == 4 and all(dead not in e.calendar for e in res.epochs)
    assert (0, dead) not in backend.installed.members
    newcomer = LBManager(r.uri).register("again", "127.0.0.1", 22000)
    assert cp.service.sessions[int(newcomer.session_id)].member_id == dead


def test_free_clears_tables(loop):
    cp, clock, backend, r = loop
    w = LBManager(r.uri)
    w.register("w", "127.0.0.1", 20000)
    w.send_state(fill_percent=0.0, control_signal=0.0)
    cp.tick()
    assert backend.installed.calendars
    admin(cp).free(r.lb_id)
    cp.controller.sync_tables()
    t = backend.installed
    assert not (t.lbs or t.senders or t.epochs or t.calendars or t.members)


def test_controller_thread_runs_and_metrics_observe_ticks():
    with control_plane(config(controller_period=0.05), run_controller=True) as cp:
        m = admin(cp)
        r = m.reserve("threaded")
        w = LBManager(r.uri)
        w.register("w", "127.0.0.1", 20000)
        w.send_state(fill_percent=0.5, control_signal=0.0)
        import time
        deadline = time.monotonic() + 5
        while not cp.backend.installed.calendars and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cp.backend.installed.calendars
        cp.tick()
        text = cp.metrics.text().decode()
        assert f'ejlb_lb_active_sessions{{lb="{r.lb_id}"}} 1.0' in text
        assert 'ejlb_rpc_total{code="OK",method="SendState"} 1.0' in text
        count = [l for l in text.splitlines() if l.startswith("ejlb_controller_tick_seconds_count")][0]
        assert float(count.split()[-1]) >= 1
        assert f'ejlb_lb_fill{{lb="{r.lb_id}",stat="avg"}} 0.5' in text


def test_metrics_http_endpoint():
    import urllib.request

    with control_plane(config(metrics_port=0)) as cp:
        m = admin(cp)
        m.version()
        body = urllib.request.urlopen(f"http://127.0.0.1:{cp.metrics_port}/metrics", timeout=5).read().decode()
        assert 'ejlb_rpc_total{code="OK",method="Version"} 1.0' in body
        assert "ejlb_sync_malformed 0.0" in body


def test_concurrent_rpcs_while_the_controller_ticks():
    """Reports, registrations and deregistrations from several threads against a 20 ms controller:
    no RPC fails, and the final tables hold exactly the workers still registered."""
    import threading

    with control_plane(config(controller_period=0.02), run_controller=True) as cp:
        r = admin(cp).reserve("busy")
        errors = []

        def worker(k):
            try:
                with LBManager(r.uri) as w:
                    for i in range(6):
                        w.register(f"t{k}-{i}", "127.0.0.1", 20000 + 10 * k + i)
                        for _ in range(5):
                            w.send_state(fill_percent=0.5, control_signal=float(k), is_ready=True)
                        if i % 2:
                            w.deregister()
            except Exception as e:  # collected: an assertion in a thread would be lost
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        cp.tick()
        live = {s.member_id for s in cp.service.reservations[int(r.lb_id)].live_sessions}
        assert len(live) == 12
        installed = {m for (lb, m), member in cp.backend.installed.members.items() if not member.drop}
        assert installed == live
