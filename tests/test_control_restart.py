"""Kill the control plane (SIGKILL, in a subprocess) mid-reservation and restart it on the same
SQLite file: tokens, sessions, epochs and the installed tables come back."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from control_tools import config, control_plane
from ejlb.control.client import LBManager
from ejlb.control.errors import Unauthenticated
from ejlb.dataplane.tables import MemoryBackend

ADMIN = "admin-" + "0" * 20

SERVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from control_tools import config
    from ejlb.control.server import ControlPlane
    cp = ControlPlane(config(n_instances=2, db={db!r}, controller_period=0.1))
    cp.start()
    print(cp.port, flush=True)
    time.sleep(600)
""")


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def killed_server(tmp_path):
    """Run a control plane in a subprocess, set up a reservation with workers, SIGKILL it."""
    db = str(tmp_path / "control.db")
    code = SERVER.format(tests=os.path.dirname(__file__), db=db)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        m = LBManager(f"ejfat://{ADMIN}@127.0.0.1:{port}/")
        r = m.reserve("survivor", senders=["127.0.0.1"])
        workers = [LBManager(r.uri) for _ in range(2)]
        regs = [w.register(f"w{i}", "127.0.0.1", 20000 + i, weight=1.0 + i) for i, w in enumerate(workers)]
        for w in workers:
            w.send_state(fill_percent=0.3, control_signal=0.0, totals={"total_events_recv": 11})
        assert wait_for(lambda: all(x.slotsAssigned for x in m.status(r.lb_id).workers))
        reader = m.create_token("reader", [("reservation", r.lb_id, "read_only")]).token
        time.sleep(0.3)  # at least one more tick flushes the reports
        before = m.status(r.lb_id)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    return db, r, regs, reader, before


def test_restart_restores_everything(killed_server):
    db, r, regs, reader, before = killed_server
    import sqlite3

    with sqlite3.connect(db) as con:  # the killed server left a WAL database behind
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        import hashlib

        for secret in (ADMIN, reader, r.token, regs[0].token):  # only hashes are stored
            dump = "\n".join(con.iterdump())
            assert secret not in dump
            digest = hashlib.sha256(secret.encode()).hexdigest()
            assert con.execute("SELECT count(*) FROM tokens WHERE hash = ?", (digest,)).fetchone()[0] == 1
    backend = MemoryBackend()  # a fresh data plane: the restart must re-install the tables
    with control_plane(config(n_instances=2, db=db), backend=backend) as cp:
        uri = lambda token: f"ejfat://{token}@127.0.0.1:{cp.port}/"  # noqa: E731
        m = LBManager(uri(ADMIN))
        after = m.status(r.lb_id)
        assert after.currentEpoch == before.currentEpoch
        assert [(w.name, w.slotsAssigned, list(w.slots)) for w in after.workers] == \
               [(w.name, w.slotsAssigned, list(w.slots)) for w in before.workers]
        assert [w.totalEventsRecv for w in after.workers] == [11, 11]
        assert list(after.senderAddresses) == ["127.0.0.1"]
        # tokens: reservation, session and delegated tokens still work
        assert LBManager(uri(reader)).get(r.lb_id).lbId == r.lb_id
        assert LBManager(r.uri.with_(port=cp.port)).get().lbId == r.lb_id
        w = LBManager(r.uri.with_(port=cp.port, token=regs[0].token, session_id=regs[0].session_id))
        w.send_state(fill_percent=0.1, control_signal=0.0)
        # tables re-applied to the fresh backend, matching the persisted epochs
        res = cp.service.reservations[int(r.lb_id)]
        t = backend.installed
        assert set(t.lbs) == {res.lb.lb_id}
        assert t.calendars[(res.lb.lb_id, res.epochs[-1].epoch_id)] == res.epochs[-1].calendar
        assert {k[1] for k in t.members} == {s.member_id for s in res.sessions.values()}
        # the sync listener is back on the same port
        assert res.sync_port == r.uri.sync_address(4).port
        # a new reservation does not reuse the id
        assert int(m.reserve("next").lb_id) > int(r.lb_id)


def test_rotated_admin_token_stops_working(tmp_path):
    db = str(tmp_path / "c.db")
    with control_plane(config(db=db)) as cp:
        child = LBManager(cp.admin_uri).create_token("ops", [("all", "", "read_only")]).token
    cfg = config(db=db)
    cfg.admin_token = "rotated-" + "1" * 20
    with control_plane(cfg) as cp:
        with pytest.raises(Unauthenticated):
            LBManager(f"ejfat://{ADMIN}@127.0.0.1:{cp.port}/").version()
        assert LBManager(cp.admin_uri).version().compatTag
        assert LBManager(f"ejfat://{child}@127.0.0.1:{cp.port}/").overview() is not None


def test_long_outage_gives_workers_time_to_report(tmp_path):
    from control_tools import FakeClock

    db = str(tmp_path / "c.db")
    clock = FakeClock()
    with control_plane(config(db=db), clock=clock) as cp:
        m = LBManager(cp.admin_uri)
        r = m.reserve("outage")
        workers = [LBManager(r.uri) for _ in range(2)]
        regs = [w.register(f"w{i}", "127.0.0.1", 20000 + i) for i, w in enumerate(workers)]
        for w in workers:
            w.send_state(fill_percent=0.0, control_signal=0.0)
        cp.tick()
    clock.advance(300.0)  # down for five minutes
    with control_plane(config(db=db), clock=clock) as cp:
        cp.tick()
        res = cp.service.reservations[int(r.lb_id)]
        assert len(res.live_sessions) == 2  # not removed on the first tick
        back = LBManager(r.uri.with_(port=cp.port, token=regs[0].token, session_id=regs[0].session_id))
        clock.advance(5.0)
        back.send_state(fill_percent=0.0, control_signal=0.0)
        clock.advance(6.0)  # 11 s after the restart: the silent one is gone, the other one stays
        back.send_state(fill_percent=0.0, control_signal=0.0)
        cp.tick()
        assert [s.name for s in res.live_sessions] == ["w0"]
        assert set(res.epochs[-1].calendar) == {cp.service.sessions[int(regs[0].session_id)].member_id}
