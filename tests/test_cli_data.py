"""`ejlb send/recv` and `ejlb perf send/recv` as subprocesses over real UDP on loopback: straight
sender -> worker (no control plane), and through a real control plane + software LB."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import timedelta

import pytest

from cli_helpers import EJLB, ejlb
from ejlb.control.client import LBManager
from ejlb.control.config import ControlConfig, InstanceConfig
from ejlb.control.server import ControlPlane
from ejlb.demo import free_udp_port
from ejlb.wire import HEADERS_LEN, fragment_count, max_payload


class Background:
    """`ejlb ARGS` running in the background; `.ports` once it says where it listens."""

    def __init__(self, *args: str, uri: str | None = None):
        env = {k: v for k, v in os.environ.items() if k != "EJFAT_URI"}
        if uri:
            env["EJFAT_URI"] = uri
        self.proc = subprocess.Popen([EJLB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stderr.readline()
        m = re.search(r"ports (\d+)-(\d+)", line)
        assert m, line + self.proc.stderr.read()
        self.ports = range(int(m.group(1)), int(m.group(2)) + 1)

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def background():
    started: list[Background] = []

    def start(*args, uri=None):
        b = Background(*args, uri=uri)
        started.append(b)
        return b

    yield start
    for b in started:
        b.kill()


def _direct_uri(port: int) -> str:
    # Back-to-back: the "data plane" is the worker itself; the control-plane part is never contacted.
    return f"ejfat://127.0.0.1:18008/?data=127.0.0.1:{port}"


def test_perf_send_to_perf_recv_without_control_plane(background, tmp_path):
    rx = background("--json", "perf", "recv", "--with-lb-header", "--no-register", "-n", "40", "-t", "30",
                    "-i", "0.2", "--check", "--plot", str(tmp_path / "recv.png"))
    # 4 MB at 0.05 Gb/s take ~0.64 s: several of the receiver's 0.2 s intervals, so live lines appear
    tx = ejlb("--json", "perf", "send", "-l", "100k", "-n", "40", "-r", "0.05", "--no-sync", "-i", "0.1",
              "--plot", str(tmp_path / "send.png"), uri=_direct_uri(rx.ports.start))
    assert tx.code == 0, tx.err
    sent = tx.json()
    assert sent["events"] == 40 and sent["send_errors"] == 0
    assert sent["datagrams"] == 40 * fragment_count(100_000, max_payload(1500))
    assert sent["bytes"] == 40 * 100_000 + sent["datagrams"] * HEADERS_LEN  # payload + LB/RE headers
    code, out, err = rx.finish()
    assert code == 0, err
    got = json.loads(out)
    assert got["events_delivered"] == 40 and got["events"] == 40 and got["corrupt"] == 0
    assert got["lost"] == 0 and got["bad_headers"] == 0
    assert got["packets"] == sent["datagrams"]
    for png in ("recv.png", "send.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ev/s" in err  # live per-interval lines go to stderr


def test_perf_recv_check_flags_events_that_are_not_perf_data(background, tmp_path):
    event = tmp_path / "other.bin"
    event.write_bytes(b"x" * 5000)
    rx = background("--json", "perf", "recv", "--with-lb-header", "--no-register", "-n", "1", "-t", "20", "--check")
    assert ejlb("send", str(event), "--no-sync", uri=_direct_uri(rx.ports.start)).code == 0
    code, out, err = rx.finish()
    assert code == 1 and "1 of 1 events differ" in err
    assert json.loads(out)["corrupt"] == 1


def test_send_files_to_recv_out_without_control_plane(background, tmp_path):
    files = []
    for i, size in enumerate((0, 1, 1459, 1460, 70_001)):  # empty, tiny, around one fragment, many fragments
        p = tmp_path / f"in{i}.bin"
        p.write_bytes(os.urandom(size))
        files.append(p)
    out_dir = tmp_path / "out"
    rx = background("--json", "recv", "--with-lb-header", "--no-register", "-o", str(out_dir), "-n", "5", "-t", "20")
    tx = ejlb("--json", "send", *map(str, files), "--no-sync", "--first-event", "1000", "--data-id", "7",
              uri=_direct_uri(rx.ports.start))
    assert tx.code == 0, tx.err
    assert [e["eventNumber"] for e in tx.json()["events"]] == [1000, 1001, 1002, 1003, 1004]
    code, out, err = rx.finish()
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert sorted(x["eventNumber"] for x in lines) == [1000, 1001, 1002, 1003, 1004]
    assert {x["dataId"] for x in lines} == {7}
    for i, p in enumerate(files):
        assert (out_dir / f"event-{1000 + i}-7.bin").read_bytes() == p.read_bytes()


def test_send_and_recv_argument_errors(tmp_path):
    r = ejlb("send", "--no-sync", uri=_direct_uri(20000))
    assert r.code == 2 and "FILES or --generate" in r.err
    r = ejlb("send", "--generate", "2", str(tmp_path), uri=_direct_uri(20000))
    assert r.code == 2  # a directory is not an event file
    r = ejlb("recv", "--register")
    assert r.code == 2 and "--register needs a URI" in r.err
    r = ejlb("perf", "send", "--mtu", "jumbo", uri=_direct_uri(20000))
    assert r.code == 2 and "--mtu" in r.err
    r = ejlb("perf", "recv", "--threads", "4", "--port-range", "1")
    assert r.code == 2 and "threads=4" in r.err


@pytest.fixture
def software_lb():
    data_port = free_udp_port("127.0.0.1")
    cfg = ControlConfig(port=0, backend="software", controller_period=0.1, sync_ipv6=None,
                        instances=(InstanceConfig(ipv6=None, data_min_port=data_port, data_max_port=data_port),))
    with ControlPlane(cfg) as cp, LBManager(cp.admin_uri) as admin:
        res = admin.reserve("cli-data", until=timedelta(minutes=5), senders=["127.0.0.1"], ip_family="ipv4")
        yield admin, res
        admin.free(res.lb_id)


def test_generated_events_through_control_plane_and_software_lb(background, software_lb):
    admin, res = software_lb
    rx = background("--json", "recv", "--register", "--name", "cli-worker", "-n", "12", "-t", "20", uri=str(res.uri))
    deadline = time.monotonic() + 10
    while not any(w.slotsAssigned for w in admin.status(res.lb_id).workers):
        assert time.monotonic() < deadline, "the registered worker never got slots"
        time.sleep(0.05)
    tx = ejlb("--json", "send", "--generate", "12", "--size", "30000", uri=str(res.uri))
    assert tx.code == 0, tx.err
    code, out, err = rx.finish()
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert sorted(x["eventNumber"] for x in lines) == sorted(e["eventNumber"] for e in tx.json()["events"])
    assert all(x["bytes"] == 30000 for x in lines)
    assert admin.status(res.lb_id).workers == []  # the worker deregistered on exit


def test_sending_from_a_host_off_the_allow_list_warns(software_lb):
    admin, res = software_lb
    ok = ejlb("send", "--generate", "1", "--size", "100", uri=str(res.uri))
    assert ok.code == 0 and "warning" not in ok.err
    admin.remove_senders(["127.0.0.1"], lb_id=res.lb_id)
    warned = ejlb("send", "--generate", "1", "--size", "100", uri=str(res.uri))
    assert warned.code == 0
    assert "warning: this host (127.0.0.1) is not an allowed sender" in warned.err
    assert "ejlb add-senders 127.0.0.1" in warned.err
