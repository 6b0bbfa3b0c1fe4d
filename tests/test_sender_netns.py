"""Sender on a route that refuses GSO and with mtu="auto", inside a network namespace whose
loopback has MTU 1500 (so the host's network is never touched)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import pytest

HERE = pathlib.Path(__file__).resolve().parent


def _netns_ok() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"sndprobe-{uuid.uuid4().hex[:6]}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not _netns_ok(), reason="needs root and `ip netns` (network namespaces)")]


@pytest.fixture
def netns():
    name = f"sender-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "mtu", "1500", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def run_in(ns: str, code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


GSO_REFUSED = """
import json, numpy as np
from ejlb.shim.sender import Sender
from sender_tools import Capture, events_of
rng = np.random.default_rng(5)
events = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (100_000, 30_000, 0, 8936 * 3)]
with Capture() as cap, Sender(cap.uri(), mtu=9000, gso="on", sync=False) as s:
    before = s.stats().gso
    for e in events:
        s.send(e)
    got = events_of(cap.take(sum(s.layout.datagrams(len(e)) for e in events)), fragment=s.layout.fragment)
    st = s.stats()
print(json.dumps({"gso_before": before, "gso_after": st.gso, "errors": st.send_errors,
                  "intact": got == dict(enumerate(events)), "datagrams": st.datagrams}))
"""


def test_route_refusing_gso_falls_back_without_loss(netns):
    # 8972-byte segments exceed the namespace's 1500-byte route MTU: the kernel refuses UDP_SEGMENT
    # (EINVAL); the sender must switch to plain sendmmsg for good and resend, losing nothing
    r = run_in(netns, GSO_REFUSED)
    assert r == {"gso_before": True, "gso_after": False, "errors": 0, "intact": True, "datagrams": 12 + 4 + 1 + 3}


AUTO_MTU = """
import json
from ejlb.shim.sender import Sender
with Sender("ejfat://lb.example:18347/lb/1?data=127.0.0.1:19522", mtu="auto", sync=False) as s:
    print(json.dumps({"mtu": s.layout.mtu, "fragment": s.layout.fragment}))
"""


def test_auto_mtu_reads_the_route(netns):
    assert run_in(netns, AUTO_MTU) == {"mtu": 1500, "fragment": 1436}
