"""`ejlb serve` as a real process on loopback: reserve, register a worker, stream through the
software LB, SIGHUP restart of the control plane while the data plane forwards, clean SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from e2e_netns_tools import wait_until
from ejlb.control.client import LBManager
from ejlb.shim.receiver import Receiver
from ejlb.shim.sender import Sender

LB_IP, WORKER_IP = "127.0.15.1", "127.0.15.3"
EJLB = [sys.executable, "-c", "from ejlb.cli.main import main; main()"]


def _serve(tmp_path, *extra):
    cmd = [*EJLB, "serve", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "cp.db"),
           "--controller-period", "0.2", "--instance", f"lb_id=0,ipv4={LB_IP},ipv6=none,ports=19530-19531", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.log", "w"), text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("ejfat://"):
        proc.kill()
        pytest.fail(f"ejlb serve printed {line!r}; log:\n{(tmp_path / 'serve.log').read_text()}")
    return proc, line


def _stream(tx, rx, first, n):
    payloads = {}
    for k in range(first, first + n):
        data = np.full(3000 + 97 * k, k & 0xFF, np.uint8)
        payloads[k] = data
        tx.send(data, event_number=k)
    got = {}
    for _ in range(n):
        ev = rx.recv(timeout=5)
        got[ev.event_number] = bytes(ev.payload)
    assert sorted(got) == list(range(first, first + n))
    assert all(got[k] == payloads[k].tobytes() for k in got)


def test_serve_forwards_restarts_and_stops(tmp_path):
    proc, admin = _serve(tmp_path)
    try:
        with LBManager(admin) as m:
            res = m.reserve("serve-test", senders=["127.0.0.1"])
            assert str(res.uri.data_address(4).ip) == LB_IP
        with Receiver(res.uri, WORKER_IP, 0, name="w1", state_period=0.1) as rx, LBManager(res.uri) as m:
            wait_until(lambda: any(w.slotsAssigned for w in m.status().workers), 10, "worker slots")
            with Sender(res.uri, sync=False) as tx:
                _stream(tx, rx, 0, 50)
                proc.send_signal(signal.SIGHUP)
                _stream(tx, rx, 50, 50)  # forwarding while the control plane restarts
                wait_until(lambda: "control plane restarted" in (tmp_path / "serve.log").read_text(), 10, "restart")
                status = m.status()
                assert [w.name for w in status.workers] == ["w1"]
                _stream(tx, rx, 100, 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    log = (tmp_path / "serve.log").read_text()
    assert rc == 0, log
    assert "stopped" in log and "Traceback" not in log


def test_serve_rejects_bad_flags(tmp_path):
    r = subprocess.run([*EJLB, "serve", "--instance", "lb_id=0,port=5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "'port=5'" in r.stderr
    r = subprocess.run([*EJLB, "serve", "--backend", "warp", "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "backend='warp'" in r.stderr
    r = subprocess.run([*EJLB, "serve", "--listen", "nowhere"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--listen 'nowhere'" in r.stderr
    bad = tmp_path / "c.yaml"
    bad.write_text("instances: [{lb_id: 9}]\n")
    r = subprocess.run([*EJLB, "serve", "-c", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "lb_id" in r.stderr and "9" in r.stderr


def test_serve_config_file_and_metrics(tmp_path):
    import socket
    import urllib.request

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"listen: {{host: 127.0.0.1, port: 0}}\nmetrics_port: {port}\n"
                   f"instances: [{{lb_id: 2, ipv4: 127.0.15.5, ipv6: null, data_min_port: 19540, data_max_port: 19540}}]\n")
    proc, admin = _serve_cfg(tmp_path, cfg)
    try:
        with LBManager(admin) as m:
            m.reserve("metrics", senders=["127.0.0.1"])
        text = ""
        deadline = time.monotonic() + 10
        while 'lb="2"' not in text and time.monotonic() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            time.sleep(0.1)
        assert 'ejlb_dataplane_lb_total{counter="rx_packets",lb="2"}' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def _serve_cfg(tmp_path, cfg):
    proc = subprocess.Popen([*EJLB, "serve", "-c", str(cfg)], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "serve.log", "w"), text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("ejfat://"):
        proc.kill()
        pytest.fail(f"ejlb serve printed {line!r}; log:\n{(tmp_path / 'serve.log').read_text()}")
    return proc, line
