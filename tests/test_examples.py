"""Every example in examples/ runs, in a reduced form, against a real control plane and the
software LB on loopback (or, for operator.sh, against the `ejlb serve` it starts itself)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from cli_helpers import REPO, run_python
from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.server import ControlPlane
from ejlb.demo import free_udp_port

EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def control_plane():
    port = free_udp_port("127.0.0.1")
    cfg = ControlConfig(port=0, backend="software", controller_period=0.1, sync_ipv6=None,
                        instances=(InstanceConfig(ipv6=None, data_min_port=port, data_max_port=port),))
    with ControlPlane(cfg) as cp:
        yield cp


@pytest.fixture
def reservation(control_plane):
    with LBManager(control_plane.admin_uri) as admin:
        res = admin.reserve("examples", until=timedelta(minutes=5), senders=["127.0.0.1"], ip_family="ipv4")
        yield admin, res
        admin.free(res.lb_id)


def _start(script: str, *args: str, uri: str) -> subprocess.Popen:
    env = dict(os.environ, EJFAT_URI=uri)
    return subprocess.Popen([sys.executable, str(EXAMPLES / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))


def _wait_for_workers(admin, lb_id: str, n: int, procs=()) -> None:
    deadline = time.monotonic() + 15
    while True:
        workers = admin.status(lb_id).workers
        if len(workers) == n and all(w.slotsAssigned for w in workers):
            return
        for p in procs:
            assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, f"workers never all got slots: {workers}"
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> list[dict]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _send(uri: str, events: int, *extra: str) -> dict:
    r = run_python(EXAMPLES / "daq_sender.py", "--events", str(events), "--rate", "400", "--shape", "64x64",
                   *extra, env={"EJFAT_URI": uri})
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["events"] == events and report["send_errors"] == 0
    return report


def test_daq_sender_to_hpc_worker(reservation):
    admin, res = reservation
    worker = _start("hpc_worker.py", "--name", "ex-worker", "--events", "25", "--idle", "20", uri=str(res.uri))
    _wait_for_workers(admin, res.lb_id, 1, [worker])
    sent = _send(str(res.uri), 25)
    (report,) = _finish(worker)
    assert report["worker"] == "ex-worker" and report["events"] == 25
    assert report["bytes"] == sent["bytes"] == 25 * 64 * 64 * 4
    assert report["mismatched"] == 0 and report["lost"] == 0
    assert report["mean_of_means"] == pytest.approx(100.0, abs=0.1)  # pedestal 100 + unit noise


def test_launch_workers_local_ranks(reservation):
    admin, res = reservation
    launcher = _start("launch_workers.py", "--local", "2", "--prefix", "rank", "--idle", "1.5", uri=str(res.uri))
    _wait_for_workers(admin, res.lb_id, 2, [launcher])
    assert sorted(w.name for w in admin.status(res.lb_id).workers) == ["rank-0", "rank-1"]
    _send(str(res.uri), 40)
    reports = _finish(launcher)
    total = reports[-1]
    per_rank = sorted(reports[:-1], key=lambda r: r["rank"])
    assert [r["worker"] for r in per_rank] == ["rank-0", "rank-1"] and all(r["ranks"] == 2 for r in per_rank)
    assert total == {"total_events": 40, "workers": 2}
    assert sum(r["events"] for r in per_rank) == 40 and all(r["mismatched"] == 0 for r in per_rank)


def test_launch_workers_takes_its_rank_from_a_slurm_array(reservation):
    admin, res = reservation
    env = dict(os.environ, EJFAT_URI=str(res.uri), SLURM_ARRAY_TASK_ID="5", SLURM_ARRAY_TASK_COUNT="8")
    env.pop("EJLB_WORKER_RANK", None)
    task = subprocess.Popen([sys.executable, str(EXAMPLES / "launch_workers.py"), "--prefix", "array", "--events", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    _wait_for_workers(admin, res.lb_id, 1, [task])
    assert [w.name for w in admin.status(res.lb_id).workers] == ["array-5"]
    _send(str(res.uri), 6)
    (report,) = _finish(task)
    assert (report["rank"], report["ranks"], report["events"]) == (5, 8, 6)


def test_zmq_bridge_forwards_whole_events(reservation):
    admin, res = reservation
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    bridge = _start("zmq_bridge.py", "--name", "ex-bridge", "--push", endpoint, "--consume", "--events", "30",
                    "--idle", "20", uri=str(res.uri))
    _wait_for_workers(admin, res.lb_id, 1, [bridge])
    sent = _send(str(res.uri), 30)
    (report,) = _finish(bridge)
    assert report["events"] == 30 and report["bytes"] == sent["bytes"]
    assert report["length_mismatch"] == 0 and report["last_event"] is not None


def test_daq_sender_without_uri_is_a_usage_error():
    r = run_python(EXAMPLES / "daq_sender.py", "--events", "1")
    assert r.code == 2 and "EJFAT_URI" in r.err
    r = run_python(EXAMPLES / "daq_sender.py", "--shape", "0x3", env={"EJFAT_URI": "ejfat://127.0.0.1:18008/"})
    assert r.code == 2 and "--shape '0x3'" in r.err


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_operator_session_script():
    # The script calls `ejlb` and `python`: those of this interpreter's environment, activated or not.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, EVENTS="40", IDLE="1.5", RATE="400", SHAPE="64x64",
               DATA_PORT=str(free_udp_port("127.0.0.1")))
    env.pop("EJFAT_URI", None)
    p = subprocess.run(["bash", str(EXAMPLES / "operator.sh")], capture_output=True, text=True, env=env,
                       timeout=120, cwd=str(REPO))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all 40 events received by 2 workers" in p.stdout
    assert "freed load balancer" in p.stdout
    for step in ("== reserve", "== start 2 workers", "== send 40 events", "== free"):
        assert step in p.stdout
