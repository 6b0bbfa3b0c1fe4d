"""`ejlb monitor` keeps running through a control-plane outage and ends when the reservation goes."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

from cli_helpers import EJLB
from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig
from ejlb.control.server import ControlPlane


def _monitor(uri: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "EJFAT_URI"}
    env["EJFAT_URI"] = uri
    return subprocess.Popen([EJLB, "--json", "monitor", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_outage_is_reported_and_retried_then_freed_reservation_ends_it():
    cp = ControlPlane(ControlConfig(port=0, backend="memory")).start()
    try:
        with LBManager(cp.admin_uri) as admin:
            res = admin.reserve("mon", until=timedelta(minutes=5))
        mon = _monitor(str(res.uri), "-n", "4", "-i", "0.5")
        first = json.loads(mon.stdout.readline())
        assert "currentPredictedEventNumber" in first
    finally:
        cp.stop()  # the control plane goes away under the running monitor
    out, err = mon.communicate(timeout=60)
    assert mon.returncode == 0, err
    rest = [json.loads(line) for line in out.splitlines()]
    assert len(rest) == 3 and all("control plane unreachable" in r["error"] for r in rest)


def test_monitor_ends_with_exit_4_when_the_reservation_is_freed():
    with ControlPlane(ControlConfig(port=0, backend="memory")) as cp, LBManager(cp.admin_uri) as admin:
        res = admin.reserve("mon2", until=timedelta(minutes=5))
        # An admin-token URI for this LB: the reservation token dies with the reservation.
        watch = LBManager(cp.admin_uri).reservation_uri(res.reply).with_(token=admin.token)
        mon = _monitor(str(watch), "-i", "0.3")
        assert json.loads(mon.stdout.readline())["currentPredictedEventNumber"]
        admin.free(res.lb_id)
        out, err = mon.communicate(timeout=30)
    assert mon.returncode == 4 and "not found" in err
